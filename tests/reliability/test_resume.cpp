// A run stopped at any point and resumed ends with the logs of an uninterrupted run, row for row: rows a
// killed run wrote after its last checkpoint are dropped on resume, not repeated.
#include <filesystem>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/atomic_file.hpp"
#include "core/text_io.hpp"
#include "rm/train_rm.hpp"
#include "tests/reliability/tiny_training.hpp"
#include "tests/test_util.hpp"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

grm::TrainRmConfig tiny_config(const fs::path& dir) {
  grm::TrainRmConfig c = tiny_training(dir, 96, 32);
  c.rm.head = "linear";
  c.optim.batch_size = 8;
  c.optim.epochs = 1;  // 12 steps
  c.log_every = 1;
  c.checkpoint_every = 4;
  return c;
}

// The rows without their timing (tokens per second differs from run to run).
std::vector<json> rows_of(const fs::path& metrics) {
  std::vector<json> rows = grm::read_jsonl(metrics.string());
  for (auto& row : rows) row.erase("tokens_per_s");
  return rows;
}

void expect_same_rows(const fs::path& straight, const fs::path& resumed) {
  auto a = rows_of(straight), b = rows_of(resumed);
  ASSERT_EQ(a.size(), b.size()) << "rows: uninterrupted " << a.size() << ", resumed " << b.size();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i], b[i]) << "row " << i;
}

// Stops before the first checkpoint (2), just after one (5) and just before the next (7), each time
// resuming the same output directory.
TEST(Reliability, TrainRmMetricsAfterStopsAndResumesEqualAnUninterruptedRun) {
  auto dir = temp_dir("resume_rows");
  auto c = tiny_config(dir);
  grm::train_reward_model(c, (dir / "straight").string());
  for (int64_t stop_after : {2, 5, 3}) {  // steps per attempt: 0 -> 2, 0 -> 5, 4 -> 7
    auto partial = grm::train_reward_model(c, (dir / "resumed").string(), "", stop_after);
    ASSERT_FALSE(partial.finished);
  }
  grm::train_reward_model(c, (dir / "resumed").string());
  expect_same_rows(dir / "straight/metrics.jsonl", dir / "resumed/metrics.jsonl");
  fs::remove_all(dir);
}

// Ensemble members share one log: a stop inside member 1 keeps member 0's rows and drops only member 1's
// rows after its checkpoint.
TEST(Reliability, EnsembleMetricsAfterAStopInALaterMemberEqualAnUninterruptedRun) {
  auto dir = temp_dir("resume_members");
  auto c = tiny_config(dir);
  c.rm.method = "ensemble";
  c.rm.ensemble.members = 2;
  grm::train_reward_model(c, (dir / "straight").string());
  // Each attempt runs at most 6 steps per member: member 0 to 6, then 4 -> 10, then 8 -> 12 and member 1
  // to 6.
  for (int attempt = 0; attempt < 3; ++attempt)
    ASSERT_FALSE(grm::train_reward_model(c, (dir / "resumed").string(), "", 6).finished);
  EXPECT_TRUE(fs::exists(dir / "resumed/model.partial/member_0/config.json"));  // finished, the rest not
  grm::train_reward_model(c, (dir / "resumed").string());
  expect_same_rows(dir / "straight/metrics.jsonl", dir / "resumed/metrics.jsonl");
  fs::remove_all(dir);
}

// A damaged checkpoint is an error naming the file and the remedy, not "stoll" or a zip-reader message.
TEST(Reliability, DamagedCheckpointsAreErrorsNamingTheFile) {
  auto dir = temp_dir("damaged_checkpoint");
  auto c = tiny_config(dir);
  std::string out = (dir / "out").string(), checkpoint = out + "/checkpoint/main";
  ASSERT_FALSE(grm::train_reward_model(c, out, "", 5).finished);  // checkpoint at step 4
  grm::write_file_atomic(checkpoint + "/latest", "step_abc\n");
  std::string message = error_of([&] { grm::train_reward_model(c, out); });
  EXPECT_NE(
      message.find("latest: expected 'step_N', found 'step_abc' (delete " + checkpoint + " to restart)"),
      std::string::npos)
      << message;
  grm::write_file_atomic(checkpoint + "/latest", "step_4\n");
  std::string optimizer = checkpoint + "/step_4/optimizer.pt";
  std::string bytes = grm::read_file(optimizer);
  grm::write_file_atomic(optimizer, bytes.substr(0, bytes.size() / 2));  // truncated
  message = error_of([&] { grm::train_reward_model(c, out); });
  EXPECT_NE(message.find(optimizer + ": the optimizer state cannot be read"), std::string::npos) << message;
  EXPECT_NE(message.find("delete " + checkpoint + " to restart"), std::string::npos) << message;
  fs::remove_all(dir);
}

TEST(Reliability, KeepJsonlRecordsDropsTornAndLaterRows) {
  auto dir = temp_dir("keep_rows");
  auto path = (dir / "log.jsonl").string();
  grm::write_file_atomic(path, "{\"step\": 1}\n{\"step\": 2}\nnot json\n{\"step\": 3}\n{\"step\": 4");
  grm::keep_jsonl_before_step(path, 3);
  EXPECT_EQ(grm::read_file(path), "{\"step\": 1}\n{\"step\": 2}\n");
  grm::keep_jsonl_before_step((dir / "absent.jsonl").string(), 3);
  EXPECT_FALSE(fs::exists(dir / "absent.jsonl"));
  fs::remove_all(dir);
}

}  // namespace
