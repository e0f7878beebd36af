// `grm run EXPERIMENT.yaml`: plan the experiment's stage DAG, run it (skipping finished stages,
// resuming killed ones), then build the report. Also the world and label stages of the default world.
#include <unistd.h>

#include <filesystem>

#include <CLI/CLI.hpp>

#include "cluster/atomic_file.hpp"
#include "cluster/log.hpp"
#include "pipeline/commands.hpp"
#include "pipeline/experiment.hpp"
#include "pipeline/report.hpp"
#include "pipeline/stage_args.hpp"
#include "pipeline/world.hpp"

namespace grm {
namespace {

namespace fs = std::filesystem;

struct RunCommand {
  std::string experiment;
  std::vector<std::string> sets;
  bool dry_run = false;
  int max_cores = 0;
};

void run_experiment(const RunCommand& cmd) {
  auto plan = plan_experiment(cmd.experiment, cmd.sets);
  fs::create_directories(plan.run_dir);
  write_file_atomic((fs::path(plan.run_dir) / "experiment.yaml").string(), dump_config(plan.base));
  RunOptions options;
  options.run_dir = plan.run_dir;
  options.grm_exe = fs::read_symlink("/proc/self/exe").string();
  options.launcher = plan.base.launcher.kind;
  options.launcher_args = plan.base.launcher.args;
  options.max_cores = cmd.max_cores > 0 ? cmd.max_cores : int(plan.base.launcher.max_cores);
  options.dry_run = cmd.dry_run;
  options.live = ::isatty(STDOUT_FILENO) && options.cluster.world_size == 1;
  log::info("{}: {} stages in {}", cmd.experiment, plan.stages.size(), plan.run_dir);
  auto result = run_dag(plan.stages, options);
  if (options.cluster.world_size > 1 && options.cluster.rank != 0) return;  // rank 0 reports
  std::printf("%s\n", result.summary.c_str());
  if (!cmd.dry_run) {
    std::string verdicts = build_report(plan.run_dir);
    std::printf("report: %s/report/index.html\n%s\n", plan.run_dir.c_str(), verdicts.c_str());
  }
  if (!result.ok) fail("some stages failed; see the summary above and each stage's log.txt");
}

}  // namespace

void add_run_command(CLI::App& app) {
  auto cmd = std::make_shared<RunCommand>();
  auto* sub =
      app.add_subcommand("run", "Run an experiment: world, gold RM, proxy RMs, evaluation, BoN, PPO, report");
  sub->add_option("experiment", cmd->experiment, "experiment YAML (e.g. experiments/quickstart.yaml)")
      ->required();
  sub->add_option("--set", cmd->sets, "override a key, e.g. --set data.size=200 (repeatable)");
  sub->add_flag("--dry-run", cmd->dry_run, "print the stages that would run, run nothing");
  sub->add_option("--max-cores", cmd->max_cores, "core budget for concurrent stages (default: all)");
  sub->callback([cmd] { run_experiment(*cmd); });
}

void add_world_command(CLI::App& app) {
  auto args = std::make_shared<StageArgs>();
  auto* sub = app.add_subcommand("world", "Stage: prompts, policy samples and oracle-labelled gold pairs");
  add_stage_options(sub, *args);
  sub->callback(
      [args] { build_world(load_stage_config<WorldStage>(*args), args->out, config_dir_of(*args)); });
}

void add_label_command(CLI::App& app) {
  auto args = std::make_shared<StageArgs>();
  auto* sub =
      app.add_subcommand("label", "Stage: the gold RM labels the proxy-training and evaluation pools");
  add_stage_options(sub, *args);
  sub->callback([args] { label_world(load_stage_config<LabelStage>(*args), args->out); });
}

}  // namespace grm
