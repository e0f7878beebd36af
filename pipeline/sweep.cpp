#include "pipeline/sweep.hpp"

#include <fmt/format.h>

namespace grm {

namespace {

struct Axis {
  std::string key;
  YAML::Node key_node;
  std::vector<YAML::Node> values;
};

// `where` names the section in messages: "sweep.keys", "sweep.groups[1]".
std::vector<Axis> read_axes(const YAML::Node& keys, const std::string& where, const std::string& file,
                            const ConfigKeyCheck& check) {
  std::vector<Axis> axes;
  if (!keys.IsDefined() || keys.IsNull()) return axes;
  if (!keys.IsMap()) {
    fail("{}: '{}' must be a map from dotted key to a list of values", config_detail::location(file, keys),
         where);
  }
  for (const auto& item : keys) {
    Axis axis{item.first.Scalar(), item.first, {}};
    if (!item.second.IsSequence() || item.second.size() == 0) {
      fail("{}: sweep key '{}' needs a non-empty list of values, e.g. [0, 0.01]",
           config_detail::location(file, item.first), axis.key);
    }
    for (const auto& value : item.second) {
      if (check) check(axis.key, value, file);
      axis.values.push_back(value);
    }
    axes.push_back(std::move(axis));
  }
  return axes;
}

// Index tuples into the axes' value lists, in the documented order.
std::vector<std::vector<std::size_t>> combinations(const std::vector<Axis>& axes, const std::string& mode,
                                                   const std::string& file) {
  std::vector<std::vector<std::size_t>> result;
  if (axes.empty()) return {{}};
  if (mode == "zip") {
    for (const auto& axis : axes) {
      if (axis.values.size() != axes[0].values.size()) {
        fail("{}: sweep mode zip needs lists of equal length: '{}' has {} values, '{}' has {}",
             config_detail::location(file, axis.key_node), axes[0].key, axes[0].values.size(), axis.key,
             axis.values.size());
      }
    }
    for (std::size_t i = 0; i < axes[0].values.size(); ++i) result.emplace_back(axes.size(), i);
    return result;
  }
  std::vector<std::size_t> index(axes.size(), 0);
  while (true) {
    result.push_back(index);
    std::size_t digit = axes.size();
    while (digit > 0 && ++index[digit - 1] == axes[digit - 1].values.size()) index[--digit] = 0;
    if (digit == 0) return result;
  }
}

}  // namespace

std::vector<SweepPoint> expand_sweep(const YAML::Node& experiment, const std::string& file,
                                     const ConfigKeyCheck& check) {
  YAML::Node base = experiment.IsDefined() && !experiment.IsNull() ? YAML::Clone(experiment)
                                                                   : YAML::Node(YAML::NodeType::Map);
  SweepConfig sweep;
  if (experiment.IsMap() && experiment["sweep"]) {
    config_detail::decode(experiment["sweep"], sweep, config_detail::Context{file, "sweep", nullptr});
    base.remove("sweep");
  }
  std::vector<Axis> axes = read_axes(sweep.keys, "sweep.keys", file, check);
  std::vector<std::vector<Axis>> groups;
  if (sweep.groups.IsDefined() && !sweep.groups.IsNull()) {
    if (!sweep.groups.IsSequence() || sweep.groups.size() == 0)
      fail("{}: 'sweep.groups' must be a non-empty list of maps from dotted key to a list of values",
           config_detail::location(file, sweep.groups));
    for (std::size_t g = 0; g < sweep.groups.size(); ++g) {
      std::string where = fmt::format("sweep.groups[{}]", g);
      if (!sweep.groups[g].IsMap() || sweep.groups[g].size() == 0)
        fail("{}: '{}' must be a non-empty map from dotted key to a list of values",
             config_detail::location(file, sweep.groups[g]), where);
      groups.push_back(read_axes(sweep.groups[g], where, file, check));
      for (const auto& axis : groups.back())
        for (const auto& outer : axes)
          if (axis.key == outer.key)
            fail("{}: sweep key '{}' is in both sweep.keys and {}; give it in one place",
                 config_detail::location(file, axis.key_node), axis.key, where);
    }
  }
  if (groups.empty()) groups.emplace_back();  // `keys` alone
  auto set_values = [&](SweepPoint& point, const std::vector<Axis>& on,
                        const std::vector<std::size_t>& index) {
    for (std::size_t a = 0; a < on.size(); ++a)
      set_yaml_path(point.config, on[a].key, on[a].values[index[a]],
                    config_detail::location(file, on[a].key_node));
  };
  std::vector<SweepPoint> points;
  for (const auto& index : combinations(axes, sweep.mode, file)) {
    for (const auto& group : groups) {
      for (const auto& group_index : combinations(group, "product", file)) {
        SweepPoint point{YAML::Clone(base)};
        set_values(point, axes, index);
        set_values(point, group, group_index);
        points.push_back(std::move(point));
      }
    }
  }
  return points;
}

}  // namespace grm
