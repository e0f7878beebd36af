// Bad values never crash and never produce finished-looking output: each value that once crashed
// (SIGFPE), trained on NaN or exported an untrained model is refused when the config is read, with the
// key, the value and the rule; a loss that still turns non-finite stops training before any export.
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "bon/best_of_n.hpp"
#include "core/atomic_file.hpp"
#include "core/config.hpp"
#include "pipeline/experiment.hpp"
#include "ppo/ppo.hpp"
#include "rm/train_rm.hpp"
#include "tests/test_util.hpp"

namespace fs = std::filesystem;

namespace {

struct BadValue {
  std::string assignment;  // as given to --set
  std::string rule;        // what the message must say
};

// The message of `--set assignment` against config type T; "" when it is accepted.
template <class T>
std::string refusal(const std::string& assignment) {
  YAML::Node root(YAML::NodeType::Map);
  try {
    grm::apply_checked_override<T>(root, assignment);
    grm::read_config<T>(root, "cfg.yaml");
  } catch (const grm::Error& error) {
    return error.what();
  }
  return "";
}

template <class T>
void expect_refused(const std::vector<BadValue>& cases) {
  for (const auto& bad : cases) {
    std::string key = bad.assignment.substr(0, bad.assignment.find('='));
    std::string message = refusal<T>(bad.assignment);
    EXPECT_NE(message.find("--set " + bad.assignment + ": '" + key + "' must be " + bad.rule),
              std::string::npos)
        << bad.assignment << " -> " << (message.empty() ? "accepted" : message);
  }
}

TEST(Reliability, TrainRmValuesThatCrashedOrLiedAreRefusedWhenRead) {
  expect_refused<grm::TrainRmConfig>({
      {"optim.batch_size=0", ">= 1"},  // SIGFPE before
      {"optim.grad_accum=0", ">= 1"},  // SIGFPE
      {"log_every=0", ">= 1"},         // SIGFPE
      {"eval_fraction=1.0", "in [0, 1)"},
      {"eval_fraction=1.5", "in [0, 1)"},
      {"rm.alpha=.nan", "a finite number"},  // trained 201 steps of loss nan
      {"optim.epochs=0", ">= 1"},            // exported an untrained model
      {"optim.epochs=-1", ">= 1"},
      {"max_length=0", ">= 2"},
      {"max_length=1", ">= 2"},
      {"max_length=-5", ">= 2"},
      {"rm.label_smoothing=2", "in [0, 0.5)"},
      {"optim.warmup_ratio=5", "in [0, 1]"},
      {"optim.max_grad_norm=-1", ">= 0"},
      {"rm.ensemble.members=0", ">= 1"},
      {"optim.lr=-1", "> 0"},  // a LibTorch backtrace before
      {"rm.head_hidden=0", ">= 1"},
      {"rm.lora.rank=0", ">= 1"},
  });
  EXPECT_EQ(refusal<grm::TrainRmConfig>("rm.alpha=0.01"), "");
}

TEST(Reliability, SamplingAndPpoValuesAreRefusedWhenRead) {
  expect_refused<grm::BonConfig>({{"temperature=-1", ">= 0"}, {"top_p=0", "in (0, 1]"}, {"n_max=0", ">= 1"}});
  expect_refused<grm::PpoConfig>({{"steps=0", ">= 1"},
                                  {"top_p=1.5", "in (0, 1]"},
                                  {"kl.coef=-0.1", ">= 0"},
                                  {"rollout_batch=0", ">= 1"},
                                  {"gamma=1.1", "in [0, 1]"},
                                  {"optim.lr=.inf", "a finite number"}});
  // The experiment's sections hold the same configs, so the same rules reach `grm run --set`.
  expect_refused<grm::Experiment>({{"train.batch_size=0", ">= 1"}, {"data.label_noise=1.5", "in [0, 1]"}});
}

// A margin too large for float makes the margin loss infinite at the first step: training stops with the
// step and the loss term named, and leaves no model directory that could pass for a trained one.
TEST(Reliability, ANonFiniteLossStopsTrainingAndExportsNothing) {
  auto dir = temp_dir("nonfinite");
  grm::TrainRmConfig c;
  c.model = shared_path("models/tinystories-656k");
  c.data.path = (dir / "pairs.jsonl").string();
  c.data.margin_field = "margin";
  std::string lines;
  for (int i = 0; i < 16; ++i)
    lines += nlohmann::json({{"prompt", "Once upon a time,"},
                             {"chosen", " a cat sat." + std::to_string(i)},
                             {"rejected", " a dog ran." + std::to_string(i)},
                             {"margin", 1e39}})
                 .dump() +
             "\n";
  grm::write_file_atomic(c.data.path, lines);
  c.rm.method = "margin";
  c.max_length = 32;
  c.threads = 1;
  c.eval_fraction = 0;
  std::string message = error_of([&] { grm::train_reward_model(c, (dir / "out").string()); });
  EXPECT_NE(message.find("step 1: the reward loss is inf"), std::string::npos) << message;
  EXPECT_NE(message.find("no model was exported"), std::string::npos) << message;
  EXPECT_FALSE(fs::exists(dir / "out/model"));
  fs::remove_all(dir);
}

// The exit status of `command`, stopped after 20 s (124) should it start serving after all.
int run(const std::string& command) {
  return WEXITSTATUS(std::system(("timeout 20 " + command + " > /dev/null 2>&1").c_str()));
}

// Limits given on the command line are checked on their text: -5 once wrapped to "no limit" in a size_t.
TEST(Reliability, ServeRefusesNonPositiveLimitsAtStart) {
  std::string serve = std::string(GRM_BINARY) + " serve --model " + shared_path("models/tinystories-656k");
  for (const char* bad : {" --max-body-bytes -5", " --max-body-bytes 0", " --max-batch 0", " --port 70000"}) {
    int status = run(serve + bad);
    EXPECT_TRUE(status != 0 && status != 124) << bad << ": exit status " << status;
  }
}

}  // namespace
