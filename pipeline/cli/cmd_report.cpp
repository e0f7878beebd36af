#include <iostream>

#include <CLI/CLI.hpp>

#include "pipeline/cli/commands.hpp"
#include "pipeline/report/report.hpp"

namespace grm {
namespace {

struct ReportCommand {
  std::string run_dir;
  ReportOptions options;
};

void run_report(const ReportCommand& cmd) {
  std::string verdict = build_report(cmd.run_dir, cmd.options);
  std::cout << verdict << "report: " << cmd.run_dir << "/report/index.html\n";
}

}  // namespace

void add_report_command(CLI::App& app) {
  auto cmd = std::make_shared<ReportCommand>();
  auto* sub = app.add_subcommand("report",
                                 "Rebuild a run's report (index.html, summary.md, summary.json, plots) "
                                 "from its stage outputs");
  sub->add_option("run_dir", cmd->run_dir, "run directory (the one holding dag.json)")
      ->required()
      ->check(CLI::ExistingDirectory);
  sub->add_option("--baseline", cmd->options.baseline, "method label of the baseline")->capture_default_str();
  sub->add_option("--grm-prefix", cmd->options.grm_prefix,
                  "method labels starting with this are GRM variants")
      ->capture_default_str();
  sub->callback([cmd] { run_report(*cmd); });
}

}  // namespace grm
