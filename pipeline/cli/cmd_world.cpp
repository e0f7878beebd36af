// `grm world` and `grm label`: the two stages of the default story world (pipeline/world/world.hpp).
#include <memory>

#include <CLI/CLI.hpp>

#include "pipeline/cli/commands.hpp"
#include "pipeline/stage_args.hpp"
#include "pipeline/world/world.hpp"

namespace grm {

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
