// The `grm ppo` stage: PPO of a policy against a proxy reward, evaluated by a gold reward.
#include <CLI/CLI.hpp>

#include "pipeline/cli/commands.hpp"
#include "pipeline/stage_args.hpp"
#include "ppo/ppo.hpp"

namespace grm {

void add_ppo_command(CLI::App& app) {
  auto args = std::make_shared<StageArgs>();
  auto* sub = app.add_subcommand(
      "ppo", "PPO against a proxy reward model, gold-evaluated; data-parallel under mpirun");
  add_stage_options(sub, *args);
  sub->callback([args] {
    auto config = load_stage_config<PpoConfig>(*args);
    train_ppo(config, args->out, config_dir_of(*args));
  });
}

}  // namespace grm
