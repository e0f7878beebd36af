#include "pipeline/stage_args.hpp"

#include "core/error.hpp"

namespace grm {

void add_stage_options(CLI::App* app, StageArgs& args, bool out_required) {
  app->add_option("--config", args.config, "YAML config file (fields not given keep their defaults)");
  app->add_option("--set", args.sets, "override a config key, e.g. --set rm.alpha=0.05 (repeatable)");
  auto* out = app->add_option("--out", args.out, "output directory");
  if (out_required) out->required();
  app->add_option("--input", args.inputs, "NAME=DIR of an upstream stage, used as @NAME/... in the config");
}

std::map<std::string, std::string> parse_inputs(const std::vector<std::string>& inputs) {
  std::map<std::string, std::string> out;
  for (const auto& input : inputs) {
    auto eq = input.find('=');
    if (eq == std::string::npos || eq == 0) fail("--input '{}': expected NAME=DIR", input);
    std::string name = input.substr(0, eq), key = name;
    for (int k = 1; out.count(key); ++k) key = name + "#" + std::to_string(k);
    out[key] = input.substr(eq + 1);
  }
  return out;
}

void substitute_inputs(YAML::Node& node, const std::map<std::string, std::string>& inputs) {
  if (node.IsScalar()) {
    auto text = node.Scalar();
    if (text.empty() || text[0] != '@') return;
    auto slash = text.find('/');
    std::string name = text.substr(1, slash == std::string::npos ? std::string::npos : slash - 1);
    auto it = inputs.find(name);
    if (it == inputs.end()) fail("config refers to input '@{}' but no --input {}=DIR was given", name, name);
    node = it->second + (slash == std::string::npos ? "" : text.substr(slash));
  } else if (node.IsSequence()) {
    for (size_t i = 0; i < node.size(); ++i) {
      YAML::Node child = node[i];
      substitute_inputs(child, inputs);
    }
  } else if (node.IsMap()) {
    for (auto it = node.begin(); it != node.end(); ++it) {
      YAML::Node child = it->second;
      substitute_inputs(child, inputs);
    }
  }
}

YAML::Node load_stage_yaml(const StageArgs& args) {
  if (args.config.empty()) return YAML::Node(YAML::NodeType::Map);
  YAML::Node root = load_yaml_file(args.config);
  if (root.IsNull()) return YAML::Node(YAML::NodeType::Map);
  return root;
}

std::string config_dir_of(const StageArgs& args) {
  if (args.config.empty()) return "";
  return std::filesystem::absolute(args.config).parent_path().string();
}

}  // namespace grm
