// `grm plan`: the memory a train-rm stage needs per rank (rm/memory_plan.hpp), before anything loads.
#include <cstdio>
#include <filesystem>

#include <CLI/CLI.hpp>

#include "core/error.hpp"
#include "pipeline/cli/commands.hpp"
#include "pipeline/stage_args.hpp"
#include "policy/model_config.hpp"
#include "policy/model_path.hpp"
#include "rm/memory_plan.hpp"

namespace grm {
namespace {

struct PlanCommand {
  StageArgs stage;
  int64_t ranks = 1;
  std::string device = "h100-80gb";
  std::string model_config;  // config.json to plan with, for a model not on this machine
};

void run_plan(const PlanCommand& cmd) {
  auto config = load_stage_config<TrainRmConfig>(cmd.stage);
  std::string source = cmd.model_config;
  if (source.empty()) {
    try {
      source = resolve_model_path(config.model, config_dir_of(cmd.stage));
    } catch (const Error& e) {
      fail("{}\nplan reads only the model's config.json: pass it with --model-config FILE", e.what());
    }
  }
  ModelConfig model = ModelConfig::from_file(source);
  MemoryPlan plan = plan_train_rm(config, model, cmd.ranks, cmd.device);
  std::string title = fmt::format("train-rm {} ({}, {} layers, D {}, V {}) on {} x {}: per rank",
                                  cmd.stage.config.empty() ? "(defaults)" : cmd.stage.config, config.model,
                                  model.n_layer, model.n_embd, model.n_vocab, cmd.ranks, cmd.device);
  std::fputs(format_memory_plan(plan, title).c_str(), stdout);
}

}  // namespace

void add_plan_command(CLI::App& app) {
  auto cmd = std::make_shared<PlanCommand>();
  auto* sub = app.add_subcommand(
      "plan",
      "Memory per rank of a train-rm stage (weights, gradients, optimizer, activations), before it runs");
  add_stage_options(sub, cmd->stage, false);
  sub->add_option("--ranks", cmd->ranks, "data-parallel ranks")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 20));
  sub->add_option("--device", cmd->device,
                  "h100-80gb | h200-141gb | a100-80gb | a100-40gb | l40s-48gb | rtx4090-24gb | cpu-24gb");
  sub->add_option("--model-config", cmd->model_config,
                  "the model's config.json (or directory), when config's model is not on this machine");
  sub->callback([cmd] { run_plan(*cmd); });
}

}  // namespace grm
