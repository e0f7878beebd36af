#include <CLI/CLI.hpp>

#include "bon/best_of_n.hpp"
#include "pipeline/cli/commands.hpp"
#include "pipeline/stage_args.hpp"

namespace grm {

void add_bon_command(CLI::App& app) {
  auto args = std::make_shared<StageArgs>();
  auto* sub =
      app.add_subcommand("bon", "Best-of-N: sample N_max per prompt, score with proxies and gold, curves");
  add_stage_options(sub, *args);
  sub->callback([args] {
    auto config = load_stage_config<BonConfig>(*args);
    run_best_of_n(config, args->out, config_dir_of(*args));
  });
}

}  // namespace grm
