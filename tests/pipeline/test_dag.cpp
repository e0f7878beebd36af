#include "pipeline/dag.hpp"

#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/atomic_file.hpp"
#include "core/config.hpp"
#include "tests/test_util.hpp"

namespace fs = std::filesystem;

namespace {

// Stands in for the grm executable. Its subcommand picks a behaviour; every call is recorded in
// RUN_DIR/calls.txt, inputs in <out>/inputs.txt.
const char* kFakeGrm = R"sh(#!/bin/sh
sub=$1; shift
while [ $# -gt 0 ]; do
  case $1 in
    --config) config=$2; shift 2;;
    --out) out=$2; shift 2;;
    --input) echo "$2" >> "$out/inputs.txt"; shift 2;;
    *) shift;;
  esac
done
run=$(dirname "$(dirname "$out")")
basename "$out" >> "$run/calls.txt"
echo "$OMP_NUM_THREADS" > "$out/threads"
echo "${CUDA_VISIBLE_DEVICES-unset}" > "$out/gpus"
case $sub in
  ok) echo "working on $config";;
  fail) echo "boom: the model exploded" >&2; exit 3;;
  sleep)
    mkdir -p "$run/active"
    echo "$OMP_NUM_THREADS" > "$run/active/$$"
    cat "$run/active"/* | awk '{s += $1} END {print s}' >> "$run/cores_in_use.txt"
    sleep 0.3
    rm "$run/active/$$";;
  crash_once)
    if [ ! -f "$out/checkpoint" ]; then echo 7 > "$out/checkpoint"; kill -9 $$; fi
    echo "resumed from step $(cat "$out/checkpoint")" > "$out/result";;
esac
)sh";

class DagTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    root_ = temp_dir(std::string("dag_") + info->name());
    exe_ = (root_ / "fake_grm").string();
    std::ofstream(exe_) << kFakeGrm;
    fs::permissions(exe_, fs::perms::owner_all);
    options_.run_dir = (root_ / "run").string();
    options_.grm_exe = exe_;
    options_.launcher = "local";
    options_.max_cores = 2;
    options_.out = &progress_;
    options_.cluster = grm::ClusterEnv{};
  }
  void TearDown() override { fs::remove_all(root_); }

  std::string add(const std::string& name, const std::string& subcommand, const std::string& config,
                  std::vector<std::string> deps = {}, int cores = 1) {
    grm::StageSpec spec;
    spec.name = name;
    spec.subcommand = subcommand;
    spec.config = grm::load_yaml_text(config, "test");
    spec.deps = std::move(deps);
    spec.cores = cores;
    return grm::add_stage(stages_, spec);
  }

  std::vector<std::string> lines(const std::string& path) const {
    std::vector<std::string> result;
    std::ifstream file(path);
    for (std::string line; std::getline(file, line);) result.push_back(line);
    return result;
  }
  std::string run_file(const std::string& name) const { return options_.run_dir + "/" + name; }
  std::string dir(const std::string& id) const { return grm::stage_dir(options_.run_dir, id); }
  const grm::StageOutcome& outcome(const grm::RunResult& result, const std::string& id) const {
    for (const auto& stage : result.stages) {
      if (stage.id == id) return stage;
    }
    throw std::runtime_error("no outcome for " + id);
  }

  fs::path root_;
  std::string exe_;
  std::ostringstream progress_;
  grm::RunOptions options_;
  std::vector<grm::StageSpec> stages_;
};

TEST(StageIds, IdenticalStagesDedupeAndChangesPropagate) {
  std::vector<grm::StageSpec> stages;
  auto make = [](std::string name, std::string config, std::vector<std::string> deps,
                 std::map<std::string, std::string> labels) {
    grm::StageSpec spec;
    spec.name = std::move(name);
    spec.subcommand = "train-rm";
    spec.config = grm::load_yaml_text(config, "test");
    spec.deps = std::move(deps);
    spec.labels = std::move(labels);
    return spec;
  };
  std::string world = grm::add_stage(stages, make("world", "n: 1", {}, {{"seed", "0"}}));
  std::string rm_a =
      grm::add_stage(stages, make("proxy_rm", "alpha: 0.01", {world}, {{"method", "bt"}, {"seed", "0"}}));
  std::string rm_b =
      grm::add_stage(stages, make("proxy_rm", "alpha: 0.01", {world}, {{"method", "bt"}, {"seed", "1"}}));
  EXPECT_EQ(rm_a, rm_b);
  ASSERT_EQ(stages.size(), 2u);
  EXPECT_EQ(stages[1].labels, (std::map<std::string, std::string>{{"method", "bt"}}));  // seeds disagree
  EXPECT_EQ(rm_a.rfind("proxy_rm-", 0), 0u);
  EXPECT_EQ(rm_a.size(), std::string("proxy_rm-").size() + 16);

  std::string rm_alpha = grm::add_stage(stages, make("proxy_rm", "alpha: 0.05", {world}, {}));
  EXPECT_NE(rm_alpha, rm_a);
  std::string world2 = grm::add_stage(stages, make("world", "n: 2", {}, {}));
  std::string rm_upstream = grm::add_stage(stages, make("proxy_rm", "alpha: 0.01", {world2}, {}));
  EXPECT_NE(world2, world);
  EXPECT_NE(rm_upstream, rm_a);  // same config, changed input: re-runs
  EXPECT_EQ(stages.size(), 5u);
  // Resources do not change the id.
  grm::StageSpec wide = make("proxy_rm", "alpha: 0.01", {world}, {});
  wide.ranks = 8;
  EXPECT_EQ(grm::add_stage(stages, wide), rm_a);
  EXPECT_THROW(grm::add_stage(stages, make("eval", "x: 1", {"nope-0"}, {})), grm::Error);
}

TEST_F(DagTest, RunsStagesInOrderWithInputsConfigsAndMarkers) {
  std::string world = add("world", "ok", "n: 1");
  std::string rm = add("proxy_rm", "ok", "alpha: 0.01", {world}, 2);
  std::string eval = add("eval", "ok", "sets: [id, ood]", {rm, world});
  grm::RunResult result = grm::run_dag(stages_, options_);
  ASSERT_TRUE(result.ok) << result.summary << progress_.str();
  EXPECT_EQ(lines(run_file("calls.txt")), (std::vector<std::string>{world, rm, eval}));
  for (const auto& id : {world, rm, eval}) EXPECT_TRUE(fs::exists(dir(id) + "/DONE")) << id;
  EXPECT_EQ(grm::read_file(dir(rm) + "/config.yaml"), "alpha: 0.01\n");
  EXPECT_EQ(lines(dir(eval) + "/inputs.txt"),
            (std::vector<std::string>{"proxy_rm=" + dir(rm), "world=" + dir(world)}));
  EXPECT_EQ(lines(dir(rm) + "/threads"), (std::vector<std::string>{"2"}));
  EXPECT_EQ(lines(dir(rm) + "/gpus"), (std::vector<std::string>{"unset"}));  // no GPU accounting by default
  std::string log = grm::read_file(dir(eval) + "/log.txt");
  EXPECT_NE(log.find("=== grm run"), std::string::npos);
  EXPECT_NE(log.find("working on " + dir(eval) + "/config.yaml"), std::string::npos) << log;
  EXPECT_FALSE(fs::exists(dir(eval) + "/pid"));

  auto dag = nlohmann::json::parse(grm::read_file(run_file("dag.json")));
  ASSERT_EQ(dag["stages"].size(), 3u);
  EXPECT_EQ(dag["stages"][2]["deps"], nlohmann::json({rm, world}));
  EXPECT_EQ(dag["stages"][2]["state"], "done");
  for (const auto& status : grm::read_dag_status(options_.run_dir))
    EXPECT_EQ(status.state, grm::StageState::done) << status.id;
}

TEST_F(DagTest, FailureSkipsDependantsButSiblingsFinish) {
  std::string a = add("a", "ok", "a: 1");
  std::string b = add("b", "fail", "b: 1", {a});
  std::string c = add("c", "ok", "c: 1", {b});
  std::string d = add("d", "ok", "d: 1", {c});
  std::string e = add("e", "ok", "e: 1", {a});
  grm::RunResult result = grm::run_dag(stages_, options_);
  EXPECT_FALSE(result.ok);
  EXPECT_EQ(outcome(result, b).state, grm::StageState::failed);
  EXPECT_EQ(outcome(result, b).exit.code, 3);
  EXPECT_EQ(outcome(result, c).state, grm::StageState::skipped);
  EXPECT_EQ(outcome(result, d).state, grm::StageState::skipped);
  EXPECT_EQ(outcome(result, e).state, grm::StageState::done);
  EXPECT_FALSE(fs::exists(dir(b) + "/DONE"));
  EXPECT_EQ(lines(run_file("calls.txt")).size(), 3u);  // c and d never started
  EXPECT_NE(result.summary.find("FAILED " + b + ": exit code 3; log: " + dir(b) + "/log.txt"),
            std::string::npos)
      << result.summary;
  EXPECT_NE(result.summary.find("boom: the model exploded"), std::string::npos) << result.summary;
  EXPECT_NE(result.summary.find("skipped because of it: " + c + ", " + d), std::string::npos)
      << result.summary;
  EXPECT_NE(result.summary.find("2 done (0 cached), 1 failed, 2 skipped"), std::string::npos)
      << result.summary;

  std::map<std::string, grm::StageState> states;
  for (const auto& status : grm::read_dag_status(options_.run_dir)) states[status.id] = status.state;
  EXPECT_EQ(states[b], grm::StageState::failed);
  EXPECT_EQ(states[d], grm::StageState::skipped);
  std::string table = grm::format_dag_status(grm::read_dag_status(options_.run_dir));
  EXPECT_NE(table.find("5 stages: 2 done 1 failed 2 skipped"), std::string::npos) << table;
}

TEST_F(DagTest, RerunSkipsDoneStagesAndRetriesFailedOnes) {
  std::string a = add("a", "ok", "a: 1");
  std::string b = add("b", "fail", "b: 1", {a});
  EXPECT_FALSE(grm::run_dag(stages_, options_).ok);
  grm::RunResult again = grm::run_dag(stages_, options_);
  EXPECT_TRUE(outcome(again, a).cached);
  EXPECT_EQ(outcome(again, b).state, grm::StageState::failed);
  EXPECT_EQ(lines(run_file("calls.txt")), (std::vector<std::string>{a, b, b}));
  // Both attempts of b are in its one log.
  std::string log = grm::read_file(dir(b) + "/log.txt");
  EXPECT_NE(log.find("boom"), log.rfind("boom"));

  stages_.clear();
  add("a", "ok", "a: 1");
  grm::RunResult cached = grm::run_dag(stages_, options_);
  EXPECT_TRUE(cached.ok);
  EXPECT_EQ(lines(run_file("calls.txt")).size(), 3u);
  EXPECT_NE(progress_.str().find("1 of 1 stages already done (cached)"), std::string::npos);
}

TEST_F(DagTest, ConcurrentStagesStayWithinTheCoreBudget) {
  for (int i = 0; i < 4; ++i) add("s" + std::to_string(i), "sleep", "i: " + std::to_string(i));
  add("wide", "sleep", "wide: 1", {}, 2);
  add("s4", "sleep", "i: 4");
  grm::RunResult result = grm::run_dag(stages_, options_);
  ASSERT_TRUE(result.ok) << result.summary;
  std::vector<std::string> in_use = lines(run_file("cores_in_use.txt"));
  ASSERT_EQ(in_use.size(), 6u);
  int most = 0, full = 0;
  for (const auto& cores : in_use) {
    most = std::max(most, std::stoi(cores));
    full += cores == "2";
  }
  EXPECT_EQ(most, 2);  // never above the budget
  EXPECT_GE(full, 2);  // the wide stage alone fills it once; single-core stages overlapped at least once
}

TEST_F(DagTest, GpusAreSharedOutOneStageAtATime) {
  std::string first = add("gpu_a", "sleep", "a: 1");
  std::string second = add("gpu_b", "sleep", "b: 1");
  std::string cpu = add("cpu", "sleep", "c: 1");
  for (auto& stage : stages_) stage.gpus = stage.name == "cpu" ? 0 : 1;
  options_.gpus = 1;
  options_.max_cores = 3;
  auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(grm::run_dag(stages_, options_).ok);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_GE(seconds, 0.6);  // the two GPU stages (0.3 s each) could not overlap
  EXPECT_EQ(lines(dir(first) + "/gpus"), (std::vector<std::string>{"0"}));
  EXPECT_EQ(lines(dir(second) + "/gpus"), (std::vector<std::string>{"0"}));
  EXPECT_EQ(lines(dir(cpu) + "/gpus"), (std::vector<std::string>{""}));  // hidden from CPU stages
  std::vector<std::string> in_use = lines(run_file("cores_in_use.txt"));
  EXPECT_NE(std::find(in_use.begin(), in_use.end(), "2"), in_use.end());  // the CPU stage ran alongside
}

TEST_F(DagTest, KilledStageResumesInItsDirectory) {
  std::string a = add("train", "crash_once", "steps: 10");
  std::string b = add("eval", "ok", "x: 1", {a});
  grm::RunResult first = grm::run_dag(stages_, options_);
  EXPECT_EQ(outcome(first, a).state, grm::StageState::failed);
  EXPECT_EQ(outcome(first, a).exit.signal, SIGKILL);
  EXPECT_EQ(outcome(first, b).state, grm::StageState::skipped);
  EXPECT_NE(first.summary.find("killed by signal 9"), std::string::npos) << first.summary;
  EXPECT_FALSE(fs::exists(dir(a) + "/DONE"));

  grm::RunResult second = grm::run_dag(stages_, options_);
  ASSERT_TRUE(second.ok) << second.summary;
  EXPECT_EQ(lines(dir(a) + "/result"), (std::vector<std::string>{"resumed from step 7"}));
}

TEST_F(DagTest, DryRunPrintsLauncherCommandsAndRunsNothing) {
  std::string a = add("world", "ok", "n: 1");
  grm::StageSpec wide;
  wide.name = "train";
  wide.subcommand = "train-rm";
  wide.config = grm::load_yaml_text("n: 2", "test");
  wide.deps = {a};
  wide.ranks = 4;
  std::string b = grm::add_stage(stages_, wide);
  options_.dry_run = true;
  options_.launcher = "mpirun";
  options_.np = 2;
  grm::RunResult result = grm::run_dag(stages_, options_);
  std::vector<std::string> expected = {"mpirun", "-np", "2", "--oversubscribe"};
  if (::geteuid() == 0) expected.push_back("--allow-run-as-root");
  for (const auto& arg : {exe_, std::string("train-rm"), std::string("--config"), dir(b) + "/config.yaml",
                          std::string("--out"), dir(b), std::string("--input"), "world=" + dir(a)}) {
    expected.push_back(arg);
  }
  EXPECT_EQ(outcome(result, b).command, expected);
  EXPECT_EQ(outcome(result, a).command,
            (std::vector<std::string>{exe_, "ok", "--config", dir(a) + "/config.yaml", "--out", dir(a)}));
  EXPECT_NE(progress_.str().find("would run " + b + ": mpirun -np 2"), std::string::npos) << progress_.str();
  EXPECT_FALSE(fs::exists(run_file("calls.txt")));
  EXPECT_FALSE(fs::exists(options_.run_dir));  // a dry run writes nothing

  EXPECT_EQ(grm::launch_command("srun", 3, {"--mpi=pmix"}, {"grm", "x"}),
            (std::vector<std::string>{"srun", "--overlap", "-n", "3", "--mpi=pmix", "grm", "x"}));
  EXPECT_EQ(grm::launch_command("local", 3, {}, {"grm", "x"}), (std::vector<std::string>{"grm", "x"}));
  EXPECT_THROW(grm::launch_command("ssh", 1, {}, {"grm"}), grm::Error);
}

TEST_F(DagTest, MissingExecutableFailsTheStageNotTheRun) {
  std::string a = add("a", "ok", "a: 1");
  std::string b = add("b", "ok", "b: 1");
  options_.grm_exe = (root_ / "no_such_grm").string();
  grm::RunResult result = grm::run_dag(stages_, options_);
  EXPECT_FALSE(result.ok);
  EXPECT_EQ(outcome(result, a).state, grm::StageState::failed);
  EXPECT_EQ(outcome(result, b).state, grm::StageState::failed);
  EXPECT_NE(grm::read_file(dir(a) + "/log.txt").find("cannot start"), std::string::npos);
}

TEST_F(DagTest, RunningStagesShowInStatusAndBlockASecondRun) {
  std::string a = add("a", "ok", "a: 1");
  std::string b = add("b", "ok", "b: 1");
  ASSERT_TRUE(grm::run_dag(stages_, options_).ok);
  fs::remove(dir(a) + "/DONE");
  fs::remove(dir(b) + "/DONE");
  // A live process whose command line names a's directory, as a stage left by a killed `grm run` would.
  // Short sleeps, so killing the shell leaves no long-lived child behind.
  pid_t orphan = grm::spawn_process({"sh", "-c", "while :; do sleep 0.1; done", dir(a)}, {});
  grm::write_file_atomic(dir(a) + "/pid", fmt::format("{} {}\n", orphan, grm::host_name()));
  grm::write_file_atomic(dir(b) + "/pid", fmt::format("{} {}\n", 999999, grm::host_name()));
  std::map<std::string, grm::StageState> states;
  for (const auto& status : grm::read_dag_status(options_.run_dir)) states[status.id] = status.state;
  EXPECT_EQ(states[a], grm::StageState::running);
  EXPECT_EQ(states[b], grm::StageState::interrupted);
  try {
    grm::run_dag(stages_, options_);
    ADD_FAILURE() << "expected an error about the orphaned stage";
  } catch (const grm::Error& error) {
    EXPECT_NE(std::string(error.what()).find("still running as pid " + std::to_string(orphan)),
              std::string::npos);
  }
  ::kill(orphan, SIGKILL);
  grm::wait_process(orphan);
}

TEST_F(DagTest, SecondRunOnTheSameDirectoryIsRefused) {
  add("slow", "sleep", "a: 1");
  auto first = std::async(std::launch::async, [&] { return grm::run_dag(stages_, options_); });
  while (!fs::exists(run_file("dag.json"))) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  grm::RunOptions second = options_;
  std::ostringstream ignored;
  second.out = &ignored;
  EXPECT_THROW(grm::run_dag(stages_, second), grm::Error);
  EXPECT_TRUE(first.get().ok);
}

TEST_F(DagTest, OtherRanksWaitForRankZerosVerdict) {
  add("a", "ok", "a: 1");
  grm::RunOptions rank0 = options_;
  rank0.cluster = grm::ClusterEnv{0, 2, "job-7", false};
  ASSERT_TRUE(grm::run_dag(stages_, rank0).ok);
  EXPECT_EQ(nlohmann::json::parse(grm::read_file(run_file(".finished"))),
            nlohmann::json({{"token", "job-7"}, {"ok", true}}));

  grm::RunOptions rank1 = options_;
  rank1.cluster = grm::ClusterEnv{1, 2, "job-8", false};
  auto waiting = std::async(std::launch::async, [&] { return grm::run_dag(stages_, rank1); });
  // The marker from job-7 is stale for job-8: rank 1 keeps waiting.
  EXPECT_EQ(waiting.wait_for(std::chrono::milliseconds(700)), std::future_status::timeout);
  grm::write_file_atomic(run_file(".finished"), R"({"token": "job-8", "ok": false})");
  grm::RunResult result = waiting.get();
  EXPECT_FALSE(result.ok);
  EXPECT_TRUE(result.stages.empty());
}

TEST_F(DagTest, InvalidStageListsAreRejected) {
  std::string a = add("a", "ok", "a: 1");
  stages_[0].config = grm::load_yaml_text("a: 2", "test");  // edited after its id was computed
  EXPECT_THROW(grm::run_dag(stages_, options_), grm::Error);
  stages_.clear();
  grm::StageSpec orphan;
  orphan.name = "b";
  orphan.deps = {"a-0000000000000000"};
  orphan.id = grm::stage_id(orphan);
  stages_.push_back(orphan);
  EXPECT_THROW(grm::run_dag(stages_, options_), grm::Error);
}

TEST(StageStates, RoundTripThroughTheirWordsAndAnUnknownWordIsAnError) {
  using grm::StageState;
  std::vector<std::string> words;
  for (StageState state : {StageState::pending, StageState::running, StageState::done, StageState::failed,
                           StageState::skipped, StageState::interrupted}) {
    EXPECT_EQ(grm::stage_state_from_string(grm::to_string(state)), state) << grm::to_string(state);
    words.push_back(grm::to_string(state));
  }
  EXPECT_EQ(words,
            (std::vector<std::string>{"pending", "running", "done", "failed", "skipped", "interrupted"}));
  try {
    grm::stage_state_from_string("finished");
    ADD_FAILURE() << "expected grm::Error";
  } catch (const grm::Error& error) {
    EXPECT_STREQ(
        error.what(),
        "unknown stage state 'finished' (known: done, running, failed, skipped, interrupted, pending)");
  }
  // In a dag.json the message also names the file and the stage.
  auto dir = temp_dir("dag_state");
  grm::write_file_atomic((dir / "dag.json").string(), R"({"stages": [{"id": "a-1", "state": "finished"}]})");
  try {
    grm::read_dag(dir.string());
    ADD_FAILURE() << "expected grm::Error";
  } catch (const grm::Error& error) {
    EXPECT_NE(std::string(error.what())
                  .find((dir / "dag.json").string() + ": stage 1 of 1: unknown stage state 'finished'"),
              std::string::npos)
        << error.what();
  }
  fs::remove_all(dir);
}

TEST(DagJson, StagesRoundTripThroughTheOneReader) {
  grm::DagStage failed;  // every field away from its default, in this stage or the next
  failed.id = "proxy_rm-0123456789abcdef";
  failed.name = "proxy_rm";
  failed.subcommand = "train-rm";
  failed.deps = {"label-1", "world-2"};
  failed.labels = {{"method", "grm"}, {"alpha", "0.01"}};
  failed.ranks = 2;
  failed.cores = 3;
  failed.state = grm::StageState::failed;
  failed.exit = grm::ExitStatus{137, 9};
  failed.seconds = 1.5;
  failed.dir = "stages/" + failed.id;
  grm::DagStage skipped;
  skipped.id = "eval-3";
  skipped.state = grm::StageState::skipped;
  skipped.cached = true;
  skipped.skipped_because = failed.id;
  skipped.dir = "elsewhere/eval-3";
  auto dir = temp_dir("dag_json");
  nlohmann::json dag = {{"version", 1}, {"stages", {failed, skipped, {{"id", "world-2"}}}}};
  grm::write_file_atomic((dir / "dag.json").string(), dag.dump());

  auto stages = grm::read_dag(dir.string());
  ASSERT_EQ(stages.size(), 3u);
  EXPECT_EQ(nlohmann::json(stages[0]), nlohmann::json(failed));  // every field read back as written
  EXPECT_EQ(nlohmann::json(stages[1]), nlohmann::json(skipped));
  EXPECT_EQ(stages[0].state, grm::StageState::failed);
  EXPECT_EQ(stages[0].exit.signal, 9);
  EXPECT_EQ(stages[1].skipped_because, failed.id);
  // A stage given by its id alone (by hand, or by an older grm) reads with the defaults.
  EXPECT_EQ(stages[2].id, "world-2");
  EXPECT_EQ(stages[2].state, grm::StageState::pending);
  EXPECT_EQ(stages[2].dir, "stages/world-2");
  EXPECT_EQ(stages[2].ranks, 1);
  EXPECT_TRUE(stages[2].deps.empty() && stages[2].labels.empty() && stages[2].name.empty());
  // The keys the runner has always written, so the dag.json of an earlier run reads the same.
  EXPECT_EQ(nlohmann::json(failed), nlohmann::json::parse(R"({
      "id": "proxy_rm-0123456789abcdef", "name": "proxy_rm", "subcommand": "train-rm",
      "deps": ["label-1", "world-2"], "labels": {"alpha": "0.01", "method": "grm"}, "ranks": 2, "cores": 3,
      "state": "failed", "cached": false, "exit_code": 137, "signal": 9, "seconds": 1.5,
      "skipped_because": "", "dir": "stages/proxy_rm-0123456789abcdef"})"));

  grm::write_file_atomic((dir / "dag.json").string(), R"({"stages": [{"name": "no id"}]})");
  EXPECT_THROW(grm::read_dag(dir.string()), grm::Error);
  grm::write_file_atomic((dir / "dag.json").string(), R"({"stages": {}})");
  EXPECT_THROW(grm::read_dag(dir.string()), grm::Error);
  fs::remove_all(dir);
}

}  // namespace
