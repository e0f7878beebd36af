// A real reward model behind the server: served scores equal in-process ones, over HTTP and through a
// child `grm serve` process started by a `serve: true` scorer.
#include <gtest/gtest.h>

#include <filesystem>

#include "pipeline/cli/commands.hpp"
#include "policy/model_path.hpp"
#include "policy/tokenizer/tokenizer.hpp"
#include "rm/reward_model.hpp"
#include "rm/scorer.hpp"
#include "rm/serve/client.hpp"
#include "rm/serve/server.hpp"
#include "tests/test_util.hpp"

namespace fs = std::filesystem;
using namespace grm;

namespace {

TEST(RewardServing, ServedScoresEqualInProcessScores) {
  auto dir = temp_dir("serve");
  auto model_dir = resolve_model_path("tinystories-656k");
  auto model = make_reward_model(model_dir, {"mlp", 64}, 5);
  save_reward_model(model, (dir / "rm").string());
  copy_tokenizer_files(model_dir, (dir / "rm").string());
  auto scorer = make_model_scorer((dir / "rm").string(), 8);
  ServerOptions options;
  options.port = 0;
  options.max_batch = 5;  // batches of the server differ from the in-process ones
  RewardServer server(options, [&](const std::vector<ScoreItem>& items) { return scorer->score(items); });
  server.start();
  std::vector<ScoreItem> items;
  for (int i = 0; i < 23; ++i)
    items.push_back({"Once upon a time", std::string(" there was a dog") + std::string(size_t(i % 7), '!')});
  RewardClient client(fmt::format("http://127.0.0.1:{}/get_reward", server.port()), "", 4);
  auto served = client.score(items);
  auto local = make_model_scorer((dir / "rm").string(), 32)->score(items);
  ASSERT_EQ(served.size(), local.size());
  double worst = 0;
  for (size_t i = 0; i < local.size(); ++i) worst = std::max(worst, std::abs(served[i] - local[i]));
  EXPECT_LE(worst, 1e-5);
  EXPECT_GT(std::abs(local[0] - local[6]), 0.0);  // the texts do get different rewards
  server.stop();

  // The same model as a child `grm serve` process that lives exactly as long as its scorer.
  set_served_rm_command(served_rm_command(GRM_BINARY));
  ScorerConfig served_config;
  served_config.model = (dir / "rm").string();
  served_config.serve = true;
  {
    auto child = make_scorer(served_config);
    auto via_child = child->score(items);
    double worst_child = 0;
    for (size_t i = 0; i < local.size(); ++i)
      worst_child = std::max(worst_child, std::abs(via_child[i] - local[i]));
    EXPECT_LE(worst_child, 1e-5);
  }
  fs::remove_all(dir);
}

}  // namespace
