// The options every stage subcommand shares (`grm <stage> --config FILE [--set k=v]... --out DIR
// [--input NAME=DIR]...`) and the one way a stage reads its config: YAML file, then --set overrides
// (checked against the config struct), then "@NAME/..." strings replaced by the directory of input NAME,
// then validation into the struct. The result, the stage's resolved config, is written to
// DIR/config.resolved.yaml; under `grm run` FILE is DIR/config.yaml, the planned stage config
// (pipeline/dag.hpp), which still holds the "@NAME/..." placeholders and is what the stage id hashes.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "core/atomic_file.hpp"
#include "core/config.hpp"

namespace grm {

struct StageArgs {
  std::string config;
  std::vector<std::string> sets;
  std::string out;
  std::vector<std::string> inputs;
};

void add_stage_options(CLI::App* app, StageArgs& args, bool out_required = true);
// NAME=DIR pairs; a NAME given several times maps to NAME, NAME#1, NAME#2, ...
std::map<std::string, std::string> parse_inputs(const std::vector<std::string>& inputs);
// Replaces "@NAME/rest" (and "@NAME") in every string of the tree.
void substitute_inputs(YAML::Node& node, const std::map<std::string, std::string>& inputs);
YAML::Node load_stage_yaml(const StageArgs& args);

template <class T>
T load_stage_config(const StageArgs& args) {
  YAML::Node root = load_stage_yaml(args);
  for (const auto& assignment : args.sets) apply_checked_override<T>(root, assignment);
  substitute_inputs(root, parse_inputs(args.inputs));
  T config = read_config<T>(root, args.config.empty() ? "(defaults)" : args.config);
  if (!args.out.empty()) {
    std::filesystem::create_directories(args.out);
    write_file_atomic((std::filesystem::path(args.out) / "config.resolved.yaml").string(),
                      dump_config(config));
  }
  return config;
}

std::string config_dir_of(const StageArgs& args);

}  // namespace grm
