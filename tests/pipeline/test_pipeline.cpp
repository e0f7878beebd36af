// The pipeline end to end: a miniature quickstart through `grm run` (real stages, real model) whose
// report is checked for content, a cached re-run, a run killed with SIGKILL mid-training that resumes,
// and every bad-experiment case failing with the YAML file and line.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <set>
#include <thread>

#include "core/atomic_file.hpp"
#include "pipeline/experiment.hpp"
#include "tests/test_util.hpp"

namespace fs = std::filesystem;
using namespace grm;

namespace {

const std::string kQuickstart = std::string(GRM_SOURCE_DIR) + "/experiments/quickstart.yaml";

// Small enough for CI: a few dozen pairs and samples, short continuations.
std::string mini_overrides(const fs::path& run_dir) {
  return " --set run_dir=" + run_dir.string() +
         " --set world.n_train_prompts=16 --set world.n_test_prompts=8 --set world.n_ood_prompts=8"
         " --set world.n_gold_pairs=96 --set world.n_pool_pairs=64 --set world.n_eval_pairs=24"
         " --set world.n_gold_ood_prompts=8 --set data.size=48"
         " --set world.max_new_tokens=24 --set gold.optim.epochs=1 --set train.epochs=1"
         " --set bon.config.n_max=8 --set bon.config.n_prompts=4 --set bon.config.max_new_tokens=24"
         " --set ppo.config.steps=2 --set ppo.config.eval_every=1 --set ppo.config.max_new_tokens=16"
         " --set ppo.config.n_eval_prompts=4";
}

int shell(const std::string& command) {
  return WEXITSTATUS(std::system(command.c_str()));
}

TEST(Pipeline, MiniQuickstartWritesAReportWithRealContentAndReRunsFromCache) {
  auto dir = temp_dir("mini");
  // The gold RM is served over HTTP to the BoN and PPO stages, as a gold RM in its own process would be.
  std::string run = std::string(GRM_BINARY) + " run " + kQuickstart + mini_overrides(dir / "run") +
                    " --set gold.serve=true";
  ASSERT_EQ(shell(run + " > " + (dir / "first.log").string() + " 2>&1"), 0)
      << read_file((dir / "first.log").string());
  auto report = dir / "run/report";
  for (const char* file : {"index.html", "summary.md", "summary.json"})
    EXPECT_TRUE(fs::exists(report / file)) << file;
  auto summary = nlohmann::json::parse(read_file((report / "summary.json").string()));
  auto text = summary.dump();
  for (const char* method : {"\"bt\"", "\"grm\"", "\"label_smooth\""})
    EXPECT_NE(text.find(method), std::string::npos) << method << " missing from summary.json";
  // Accuracies are fractions measured on the eval sets, per method.
  int accuracies = 0;
  for (const auto& entry : fs::directory_iterator(dir / "run/stages")) {
    if (entry.path().filename().string().rfind("eval-", 0) != 0) continue;
    auto eval = nlohmann::json::parse(read_file((entry.path() / "eval.json").string()));
    for (const auto& set : {"id", "ood_day", "ood_dialogue"}) {
      double accuracy = eval["sets"][set]["accuracy"].get<double>();
      EXPECT_GE(accuracy, 0.0);
      EXPECT_LE(accuracy, 1.0);
      EXPECT_GT(eval["sets"][set]["n"].get<int>(), 0);
      ++accuracies;
    }
  }
  EXPECT_EQ(accuracies, 9);  // three methods x three sets
  auto html = read_file((report / "index.html").string());
  EXPECT_NE(html.find("data:image/png;base64,"), std::string::npos);
  EXPECT_NE(html.find("<svg"), std::string::npos);
  auto markdown = read_file((report / "summary.md").string());
  EXPECT_NE(markdown.find("GRM"), std::string::npos);
  EXPECT_NE(markdown.find("**"), std::string::npos);  // the best accuracy is bold
  bool served = false;
  for (const auto& entry : fs::directory_iterator(dir / "run/stages"))
    if (entry.path().filename().string().rfind("bon-", 0) == 0)
      served =
          read_file((entry.path() / "log.txt").string()).find("through a served copy") != std::string::npos;
  EXPECT_TRUE(served) << "the bon stage did not score through a served gold RM";
  // Nothing changed: every stage is found done.
  auto start = std::chrono::steady_clock::now();
  ASSERT_EQ(shell(run + " > " + (dir / "second.log").string() + " 2>&1"), 0);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  auto second = read_file((dir / "second.log").string());
  EXPECT_NE(second.find("0 failed"), std::string::npos) << second;
  EXPECT_NE(second.find("cached"), std::string::npos) << second;
  EXPECT_EQ(second.find(" start "), std::string::npos) << "a stage ran again:\n" << second;
  EXPECT_LT(seconds, 60.0);
  fs::remove_all(dir);
}

TEST(Pipeline, KilledDuringTrainingResumesFromItsCheckpoint) {
  auto dir = temp_dir("kill");
  std::string run = std::string(GRM_BINARY) + " run " + kQuickstart + mini_overrides(dir / "run") +
                    " --set bon.enabled=false --set ppo.enabled=false --set 'sweep.keys={rm.method: [bt]}'"
                    " --set gold.optim.epochs=6 --set gold.optim.batch_size=4";
  pid_t child = fork();
  if (child == 0) {
    setpgid(0, 0);
    execl("/bin/sh", "sh", "-c", (run + " > " + (dir / "killed.log").string() + " 2>&1").c_str(), nullptr);
    _exit(127);
  }
  // Wait for the gold RM's first checkpoint, then kill the whole process group without warning.
  bool checkpointed = false;
  for (int i = 0; i < 1200 && !checkpointed; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (fs::exists(dir / "run/stages"))
      for (const auto& entry : fs::directory_iterator(dir / "run/stages"))
        if (entry.path().filename().string().rfind("gold_rm-", 0) == 0 &&
            fs::exists(entry.path() / "checkpoint/main/latest"))
          checkpointed = true;
  }
  ::kill(-child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  ASSERT_TRUE(checkpointed) << read_file((dir / "killed.log").string());
  ASSERT_EQ(shell(run + " > " + (dir / "resumed.log").string() + " 2>&1"), 0)
      << read_file((dir / "resumed.log").string());
  bool resumed = false;
  for (const auto& entry : fs::directory_iterator(dir / "run/stages"))
    if (entry.path().filename().string().rfind("gold_rm-", 0) == 0)
      resumed = read_file((entry.path() / "log.txt").string()).find("resuming at step") != std::string::npos;
  EXPECT_TRUE(resumed);
  EXPECT_TRUE(fs::exists(dir / "run/report/summary.json"));
  fs::remove_all(dir);
}

// plan_experiment's error for an experiment text (and overrides), or "".
std::string plan_error(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  auto dir = temp_dir("bad");
  auto path = (dir / "experiment.yaml").string();
  write_file_atomic(path, yaml);
  try {
    plan_experiment(path, overrides);
    return "";
  } catch (const Error& e) {
    return e.what();
  }
}

TEST(Pipeline, EachBadExperimentNamesTheFileAndLine) {
  auto expect = [](const std::string& error, const std::string& part) {
    EXPECT_NE(error.find(part), std::string::npos) << "error: " << error << "\nexpected: " << part;
  };
  expect(plan_error("name: x\nrm:\n  methd: bt\n"), "experiment.yaml:3: unknown key 'rm.methd'");
  expect(plan_error("name: x\ntrain:\n  lr: fast\n"), "experiment.yaml:3");
  expect(plan_error("name: x\ntrain:\n  lr: fast\n"), "'train.lr' must be a number");
  expect(plan_error("name: x\nrm: {method: magic}\n"), "must be one of");
  expect(plan_error("name: x\nworld: [1, 2]\n"), "experiment.yaml:2");
  expect(plan_error("name: x\nsweep:\n  keys:\n    rm.alphaa: [0, 1]\n"), "experiment.yaml:4");
  expect(plan_error("name: x\nsweep:\n  keys:\n    rm.alpha: [0, abc]\n"), "experiment.yaml:4");
  expect(plan_error("name: x\n", {"train.lr=abc"}), "train.lr");
  expect(plan_error("name: x\n", {"nosuch.key=1"}), "nosuch");
  expect(plan_error("name: x\npolicy: no-such-model\n"), "model 'no-such-model' not found");
  expect(plan_error("name: x\n  bad: [indent\n"), "experiment.yaml");
  try {
    plan_experiment("/nonexistent/experiment.yaml", {});
    ADD_FAILURE() << "a missing file was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/experiment.yaml"), std::string::npos) << e.what();
  }
  expect(plan_error("name: x\ndata: {size: 700}\nworld: {n_pool_pairs: 600}\n"),
         "data.size 700 is larger than the labelled pool (world.n_pool_pairs 600)");
  expect(plan_error("name: x\nsweep:\n  keys:\n    data.size: [100, 5000]\n"), "data.size 5000 is larger");
  expect(plan_error("name: x\nworld: {n_gold_ood_prompts: 0}\n"), "would be trained on no pairs of them");
  expect(plan_error("name: x\nworld: {n_test_prompts: 8}\n"), "bon.config.n_prompts 32 is more than");
  expect(plan_error("name: x\nworld: {n_test_prompts: 40}\nppo: {config: {n_eval_prompts: 64}}\n"),
         "ppo.config.n_eval_prompts 64 is more than");
  EXPECT_EQ(plan_error("name: x\n"), "");  // the defaults alone make a valid experiment
}

TEST(Pipeline, OldSpellingsNameTheirNewKeys) {
  EXPECT_NE(plan_error("name: x\nbon: {n_max: 8}\n")
                .find("/experiment.yaml:2: 'bon.n_max' was renamed to 'bon.config.n_max'"),
            std::string::npos);
  EXPECT_EQ(plan_error("name: x\n", {"ppo.config.lr=0.001"}),
            "--set ppo.config.lr=0.001: 'ppo.config.lr' was renamed to 'ppo.config.optim.lr'");
  EXPECT_NE(plan_error("name: x\nsweep:\n  keys:\n    rm.finetune: [full, frozen]\n")
                .find("experiment.yaml:4: 'rm.finetune: frozen' was renamed to 'rm.method: frozen'"),
            std::string::npos);
}

TEST(Pipeline, BonConfigReachesTheSamplingAndScoringStages) {
  auto dir = temp_dir("bon_plan");
  auto path = (dir / "e.yaml").string();
  write_file_atomic(path, "name: x\nbon:\n  config: {n_max: 8, top_k: 5, bootstrap: 50}\n");
  int found = 0;
  for (const auto& stage : plan_experiment(path, {}).stages) {
    if (stage.name == "bon_samples") {
      EXPECT_EQ(stage.config["n_max"].as<int>(), 8);
      EXPECT_EQ(stage.config["top_k"].as<int>(), 5);
      EXPECT_EQ(stage.config["n_prompts"].as<int>(), 32);  // the experiment's default, not grm bon's
      EXPECT_EQ(stage.config["prompt_file"].as<std::string>(), "@world/prompts_test.jsonl");
      // Scoring alone reads it, so a new value does not re-sample.
      EXPECT_EQ(stage.config["bootstrap"].as<int>(), BonConfig().bootstrap);
      ++found;
    } else if (stage.name == "bon") {
      EXPECT_EQ(stage.config["bootstrap"].as<int>(), 50);
      ++found;
    }
  }
  EXPECT_EQ(found, 2);
  fs::remove_all(dir);
}

TEST(Pipeline, SweepStagesAreSharedAndLabelled) {
  auto dir = temp_dir("plan");
  auto path = (dir / "e.yaml").string();
  write_file_atomic(path, "name: x\nsweep:\n  keys:\n    rm.method: [bt, grm]\n    seed: [0, 1]\n");
  auto plan = plan_experiment(path, {});
  int world = 0, gold = 0, proxies = 0, evals = 0, bon = 0;
  for (const auto& stage : plan.stages) {
    world += stage.name == "world";
    gold += stage.name == "gold_rm";
    proxies += stage.name == "proxy_rm";
    evals += stage.name == "eval";
    bon += stage.name == "bon";
    if (stage.name == "proxy_rm") {
      EXPECT_TRUE(stage.labels.count("method") && stage.labels.count("seed"));
    }
  }
  EXPECT_EQ(world, 1);
  EXPECT_EQ(gold, 1);
  EXPECT_EQ(proxies, 4);
  EXPECT_EQ(evals, 4);
  EXPECT_EQ(bon, 1);
  fs::remove_all(dir);
}

// The report groups by these labels, so they are the settings a stage ends up with, not the swept values:
// the regularizer is part of a GRM method, a baseline's unread alpha is reset, an unswept size still shows.
TEST(Pipeline, StagesAreLabelledWithTheSettingsTheyEndUpWith) {
  auto dir = temp_dir("labels");
  auto path = (dir / "e.yaml").string();
  write_file_atomic(
      path,
      "name: x\ndata: {size: 300}\nrm: {alpha: 0.05}\nsweep:\n  keys:\n    rm.method: [bt, grm]\n"
      "    rm.reg: [sft, dpo]\n");
  std::set<std::map<std::string, std::string>> proxies, evals;
  for (const auto& stage : plan_experiment(path, {}).stages) {
    if (stage.name == "proxy_rm") proxies.insert(stage.labels);
    if (stage.name == "eval") evals.insert(stage.labels);
  }
  using Labels = std::map<std::string, std::string>;
  std::set<Labels> expected = {
      Labels{{"method", "bt"}, {"alpha", "0"}, {"size", "300"}, {"head", "mlp"}, {"seed", "0"}},
      Labels{{"method", "grm"}, {"alpha", "0.05"}, {"size", "300"}, {"head", "mlp"}, {"seed", "0"}},
      Labels{{"method", "grm-dpo"}, {"alpha", "0.05"}, {"size", "300"}, {"head", "mlp"}, {"seed", "0"}}};
  EXPECT_EQ(proxies, expected);  // the two bt points share one stage
  EXPECT_EQ(evals, expected);
  fs::remove_all(dir);
}

// Sweep groups (the paper's figures each vary one thing) share the points they have in common; a point
// may leave Best-of-N out (bon.enabled) but not change how its one sample set is drawn.
TEST(Pipeline, GroupPointsShareStagesAndChooseTheirBestOfN) {
  auto dir = temp_dir("groups");
  auto path = (dir / "e.yaml").string();
  write_file_atomic(
      path,
      "name: x\ndata: {size: 300}\nworld: {n_pool_pairs: 600}\nsweep:\n  keys: {seed: [0, 1]}\n"
      "  groups:\n    - {rm.method: [bt, grm]}\n"
      "    - {rm.method: [bt], data.size: [100, 300], bon.enabled: [false], ppo.enabled: [false]}\n");
  int proxies = 0, ppo = 0;
  std::size_t bon_inputs = 0;
  for (const auto& stage : plan_experiment(path, {}).stages) {
    proxies += stage.name == "proxy_rm";
    ppo += stage.name == "ppo";
    if (stage.name == "bon" && stage.config["proxy_models"]) bon_inputs = stage.config["proxy_models"].size();
  }
  EXPECT_EQ(proxies, 2 * 3);      // per seed: bt 300 (in both groups), grm 300, bt 100
  EXPECT_EQ(bon_inputs, 2u * 2);  // bt 300 stays in: the first group scores it
  EXPECT_EQ(ppo, 2 * 2);
  write_file_atomic(path,
                    "name: x\nsweep:\n  groups:\n    - {rm.method: [bt]}\n    - {bon.config.n_max: [8]}\n");
  EXPECT_NE(error_of([&] { plan_experiment(path, {}); }).find("a sweep point changes bon.config"),
            std::string::npos);
  fs::remove_all(dir);
}

TEST(Pipeline, MarginProxiesReadTheMarginsThatLabelWrites) {
  auto dir = temp_dir("margin");
  auto path = (dir / "e.yaml").string();
  write_file_atomic(path, "name: x\nsweep:\n  keys:\n    rm.method: [bt, margin]\n");
  int margins = 0;
  for (const auto& stage : plan_experiment(path, {}).stages) {
    if (stage.name != "proxy_rm") continue;
    std::string field = stage.config["data"]["margin_field"].as<std::string>();
    if (stage.labels.at("method") == "margin") {
      EXPECT_EQ(field, "margin");  // the field `label` writes into proxy_pairs.jsonl
      ++margins;
    } else {
      EXPECT_EQ(field, "");  // the other methods are unchanged, so are their stage hashes
    }
  }
  EXPECT_EQ(margins, 1);
  fs::remove_all(dir);
}

}  // namespace
