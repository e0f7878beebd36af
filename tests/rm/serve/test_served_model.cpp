// A real reward model behind the server: served scores equal in-process ones, over HTTP and through a
// child `grm serve` process started by a `serve: true` scorer.
#include <gtest/gtest.h>

#include <filesystem>

#include "core/atomic_file.hpp"
#include "pipeline/cli/commands.hpp"
#include "policy/chat_format.hpp"
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

// A fresh reward model on TinyStories in dir/rm, with its tokenizer.
void save_fresh_rm(const fs::path& dir, const RewardHeadOptions& head, uint64_t seed) {
  auto model_dir = resolve_model_path("tinystories-656k");
  auto model = make_reward_model(model_dir, head, seed);
  save_reward_model(model, (dir / "rm").string());
  copy_tokenizer_files(model_dir, (dir / "rm").string());
}

TEST(RewardServing, ServedScoresEqualInProcessScores) {
  auto dir = temp_dir("serve");
  save_fresh_rm(dir, {"mlp", 64}, 5);
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

// A reward model reads raw (prompt, response) pairs through its own chat template, and templated texts
// (OpenRLHF's queries) as they are, in process and behind the server alike.
TEST(RewardServing, RawPairsGetTheModelsTemplateAndQueriesAreScoredAsTheyAre) {
  auto dir = temp_dir("serve_template");
  save_fresh_rm(dir, {"linear", 64}, 7);
  auto model_dir = resolve_model_path("tinystories-656k");
  auto tokenizer = load_tokenizer(model_dir);
  ChatFormat chatml = ChatFormat::resolve({"chatml", "auto"}, model_dir, *tokenizer, "test");
  auto config_path = (dir / "rm" / "config.json").string();
  auto config = nlohmann::json::parse(read_file(config_path));
  config["grm"].update(chatml.to_metadata());
  write_file_atomic(config_path, config.dump(2));

  std::string prompt = "\n\nHuman: Tell me a story.\n\nAssistant:",
              response = " Once upon a time there was a dog.";
  ChatText rendered = chatml.render(prompt, response);
  std::vector<ScoreItem> items = {{prompt, response, true, false},
                                  {"", rendered.prompt + rendered.response, true, true},
                                  {prompt, response, false, false}};
  auto scorer = make_model_scorer((dir / "rm").string(), 8);
  auto local = scorer->score(items);
  EXPECT_NEAR(local[0], local[1], 1e-6);           // the raw pair was rendered as the query already is
  EXPECT_GT(std::abs(local[0] - local[2]), 1e-6);  // a cut response has no end of turn to read at
  ScorerConfig as_text;
  as_text.model = (dir / "rm").string();
  as_text.chat_template = "none";
  auto untemplated = make_scorer(as_text)->score({items[0]});
  EXPECT_GT(std::abs(untemplated[0] - local[0]), 1e-6);  // the template is what the model read

  ServerOptions options;
  options.port = 0;
  RewardServer server(options, [&](const std::vector<ScoreItem>& batch) { return scorer->score(batch); });
  server.start();
  RewardClient client(fmt::format("http://127.0.0.1:{}/get_reward", server.port()), "");
  auto pairs = client.score({items[0], items[2]});  // raw pairs, one of them cut
  auto query = client.score({items[1]});            // sent as {"query": [...]}
  EXPECT_NEAR(pairs[0], local[0], 1e-5);
  EXPECT_NEAR(pairs[1], local[2], 1e-5);
  EXPECT_NEAR(query[0], local[1], 1e-5);
  server.stop();
  fs::remove_all(dir);
}

}  // namespace
