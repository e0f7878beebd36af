// `grm run EXPERIMENT.yaml`: plan the experiment's stage DAG, run it (skipping finished stages,
// resuming killed ones), then build the report.
#include <unistd.h>

#include <filesystem>

#include <CLI/CLI.hpp>

#include "core/atomic_file.hpp"
#include "core/log.hpp"
#include "pipeline/cli/commands.hpp"
#include "pipeline/experiment.hpp"
#include "pipeline/report/report.hpp"
#include "pipeline/stage_args.hpp"

namespace grm {
namespace {

namespace fs = std::filesystem;

struct RunCommand {
  std::string experiment;
  std::vector<std::string> sets;
  bool dry_run = false;
  int max_cores = 0;
  std::string out;  // the run directory: --set run_dir=OUT
};

void run_experiment(const RunCommand& cmd) {
  std::vector<std::string> sets = cmd.sets;
  if (!cmd.out.empty()) sets.push_back("run_dir=" + fs::absolute(cmd.out).string());
  auto plan = plan_experiment(cmd.experiment, sets);
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
  sub->add_option("--out", cmd->out, "run directory (default: the experiment's run_dir, else runs/NAME)");
  sub->callback([cmd] { run_experiment(*cmd); });
}

}  // namespace grm
