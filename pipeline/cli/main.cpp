// grm: one executable, one subcommand per stage. Errors thrown anywhere below surface here once; in a
// multi-rank job the failing rank takes the whole job down with its message instead of leaving the
// others waiting in a collective.
#include <cstdio>
#include <filesystem>

#include <CLI/CLI.hpp>

#include "bench/bench.hpp"
#include "cluster/comm.hpp"
#include "core/error.hpp"
#include "pipeline/cli/commands.hpp"

int main(int argc, char** argv) {
  grm::set_served_rm_command(
      grm::served_rm_command(std::filesystem::read_symlink("/proc/self/exe").string()));
  CLI::App app{"grm: train generalizable reward models and measure reward over-optimization"};
  app.require_subcommand(1);
  grm::add_generate_command(app);
  grm::add_tokenize_command(app);
  grm::add_chat_template_command(app);
  grm::add_plan_command(app);
  grm::add_train_rm_command(app);
  grm::add_eval_rm_command(app);
  grm::add_score_command(app);
  grm::add_serve_command(app);
  grm::add_bon_command(app);
  grm::add_ppo_command(app);
  grm::add_run_command(app);
  grm::add_world_command(app);
  grm::add_label_command(app);
  grm::add_status_command(app);
  grm::add_report_command(app);
  grm::add_bench_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "grm: error: %s\n", e.what());
    std::fflush(stderr);
    if (grm::launched_by_mpi()) grm::Comm::world().abort(1);
    return 1;
  }
  if (grm::launched_by_mpi()) grm::Comm::world().finalize();
  return 0;
}
