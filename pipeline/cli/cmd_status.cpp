#include <iostream>

#include <CLI/CLI.hpp>

#include "pipeline/cli/commands.hpp"
#include "pipeline/dag.hpp"

namespace grm {
namespace {

struct StatusCommand {
  std::string run_dir;
};

void run_status(const StatusCommand& cmd) {
  std::cout << format_dag_status(read_dag_status(cmd.run_dir));
}

}  // namespace

void add_status_command(CLI::App& app) {
  auto cmd = std::make_shared<StatusCommand>();
  auto* sub = app.add_subcommand("status",
                                 "Show a run's stage DAG: each stage done, running, failed, skipped, "
                                 "interrupted or pending");
  sub->add_option("run_dir", cmd->run_dir, "run directory (the one holding dag.json)")
      ->required()
      ->check(CLI::ExistingDirectory);
  sub->callback([cmd] { run_status(*cmd); });
}

}  // namespace grm
