// Sweep expansion: an experiment's `sweep:` section turns one YAML experiment into a list of points,
//
//   sweep:
//     mode: product            # or zip: the i-th values of every key together
//     keys:
//       rm.method: [bt, grm]
//       rm.alpha: [0, 0.01]
//
// A grid that is not one product (the paper's figures each vary one thing) is a union of groups, each a
// product of its own keys, crossed with `keys` (empty `keys`: the groups alone):
//
//     keys: {seed: [0, 1, 2]}
//     groups:
//       - {rm.method: [bt, margin]}                   # 2 points per seed
//       - {rm.method: [grm], rm.alpha: [0.01, 0.1]}   # 2 more
//
// A point that two groups both give is planned once (stages with the same config share an id, dag.hpp).
// Each point is the experiment with the `sweep` section removed and the point's values set at their
// dotted paths. A point is not labelled here: plan_experiment labels its stages with the settings they
// end up with (pipeline/experiment.hpp), which the swept values alone do not give. Order is
// deterministic: keys in file order, the first key varying slowest (nested loops); within one combination
// of `keys`, the groups in file order. Recommended use, so
// errors carry line numbers:
//
//   YAML::Node root = load_yaml_file(path);
//   for (const auto& s : sets) apply_checked_override<Experiment>(root, s);
//   read_config<Experiment>(root, path);                        // validate the base before anything runs
//   for (const auto& point : expand_sweep(root, path, config_key_check<Experiment>()))
//     Experiment experiment = read_config<Experiment>(point.config, path);
#pragma once

#include <string>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "core/config.hpp"

namespace grm {

// The `sweep:` section as a config struct, so an experiment struct can declare it as a field.
struct SweepConfig {
  std::string mode = "product";
  YAML::Node keys;    // dotted key -> list of values; a map kept in file order
  YAML::Node groups;  // a list of such maps, each expanded as a product; the points are their union
  template <class V>
  void visit(V& v) {
    v("mode", mode, {"product", "zip"});
    v("keys", keys);
    v("groups", groups);
  }
};

struct SweepPoint {
  YAML::Node config;  // the experiment at this point, without `sweep`
};

// `check` (e.g. config_key_check<Experiment>()) validates each key and value against the experiment's
// type; errors name `file` and the line of the offending key or value.
std::vector<SweepPoint> expand_sweep(const YAML::Node& experiment, const std::string& file,
                                     const ConfigKeyCheck& check = {});

}  // namespace grm
