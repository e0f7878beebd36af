// Configuration binding: every configuration is a plain struct with a default on every field and one
// `visit` method that lists its fields. That one list drives reading YAML (with file:line errors),
// writing the resolved YAML back, hashing, and checking `--set key=value` overrides and sweep keys:
//
//   struct AdamConfig {
//     double lr = 1e-4;
//     std::string schedule = "cosine";
//     template <class V> void visit(V& v) { v("lr", lr); v("schedule", schedule, {"cosine", "linear"}); }
//   };
//
// A numeric field may state its allowed values beside it, checked whenever it is read (YAML, `--set`,
// sweep values), with the file, line, key, value and rule in the message:
//     v("lr", lr, Range::positive());  v("warmup_ratio", warmup_ratio, Range::closed(0, 1));
// Every double must be finite (.nan and .inf are refused), ranged or not.
//
// Field types: bool, integers, double, std::string (optionally restricted to a list of choices),
// std::vector<T> (where T is std::string, a single string is a list of one), std::map<std::string, T>,
// std::optional<T> (YAML null = unset), YAML::Node (kept as is) and nested structs with `visit`. A struct may
// also define `void validate() const` that throws grm::Error; it runs after the struct is read and its
// message is prefixed with the file and line. Keys missing from the YAML keep their defaults; unknown keys
// are errors.
//
// An old spelling stays an error that names its replacement: beside the fields,
//     v.renamed("lr_schedule", "optim.schedule");        // a key that moved (the new one from this struct)
//     v.renamed("finetune: frozen", "method: frozen");   // a value spelled differently now
// makes YAML, `--set` and sweep keys using the old one fail with "FILE:LINE: 'lr_schedule' was renamed to
// 'optim.schedule'", whatever the order of the calls in visit.
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "core/error.hpp"

namespace grm {

using Choices = std::vector<std::string>;

// The allowed values of a numeric config field: an interval, each end open or closed.
struct Range {
  double lo = -std::numeric_limits<double>::infinity();
  double hi = std::numeric_limits<double>::infinity();
  bool lo_open = false, hi_open = false;
  static Range positive() { return {0, std::numeric_limits<double>::infinity(), true, false}; }
  static Range at_least(double lo) { return {lo, std::numeric_limits<double>::infinity(), false, false}; }
  static Range closed(double lo, double hi) { return {lo, hi, false, false}; }      // [lo, hi]
  static Range half_open(double lo, double hi) { return {lo, hi, false, true}; }    // [lo, hi)
  static Range open_closed(double lo, double hi) { return {lo, hi, true, false}; }  // (lo, hi]
  bool contains(double x) const { return (lo_open ? x > lo : x >= lo) && (hi_open ? x < hi : x <= hi); }
  std::string describe() const;  // "> 0", ">= 1", "in [0, 1)"
};

// Loads a YAML file; a missing file or a syntax error throws grm::Error naming the file (and line).
YAML::Node load_yaml_file(const std::string& path);
// Parses YAML text; `source` names it in syntax errors.
YAML::Node load_yaml_text(const std::string& text, const std::string& source);
// The YAML text of a node, block style with flow-style lists of scalars; deterministic for a given node.
std::string dump_yaml(const YAML::Node& node);
// 16 hex digits of FNV-1a-64: a stable content hash for cache keys (not cryptographic).
std::string stable_hash(std::string_view text);

// Sets `value` at a dotted path ("rm.alpha"), creating maps on the way; `where` names the origin in errors.
void set_yaml_path(YAML::Node& root, const std::string& dotted, const YAML::Node& value,
                   const std::string& where);
// Applies "rm.alpha=0.05": the value is parsed as YAML (scalar or flow list/map; empty = null).
// Untyped: pair it with check_config_key<T> (or config_key_check<T>) to catch unknown keys early.
void apply_override(YAML::Node& root, const std::string& assignment);
// Splits "key=value" into the key and the parsed value; throws on a malformed assignment.
std::pair<std::string, YAML::Node> parse_override(const std::string& assignment);

namespace config_detail {

struct Context {
  std::string file;                  // file name (or "--set ...") for messages
  std::string path;                  // dotted key of the value being read, "" at the root
  const Choices* choices = nullptr;  // allowed values of the string leaf being read
  const Range* range = nullptr;      // allowed values of the numeric leaf being read
};

std::string location(const std::string& file, const YAML::Node& node);
std::string join_key(const std::string& prefix, const std::string& key);
[[noreturn]] void type_error(const Context& ctx, const YAML::Node& node, const char* expected);
bool decode_bool(const YAML::Node& node, const Context& ctx);
std::int64_t decode_int64(const YAML::Node& node, const Context& ctx, std::int64_t min, std::int64_t max);
double decode_double(const YAML::Node& node, const Context& ctx);
std::string decode_string(const YAML::Node& node, const Context& ctx);
std::string encode_double(double value);
void check_range(double value, const Context& ctx, const YAML::Node& node);
void require(bool ok, const Context& ctx, const YAML::Node& node, const char* expected);
[[noreturn]] void unknown_key(const Context& ctx, const YAML::Node& key_node, const std::string& key,
                              const std::vector<std::string>& known);
[[noreturn]] void rethrow_with_location(const Context& ctx, const YAML::Node& node, const Error& error);

template <class T>
struct is_vector : std::false_type {};
template <class T, class A>
struct is_vector<std::vector<T, A>> : std::true_type {};
template <class T>
struct is_string_map : std::false_type {};
template <class T, class C, class A>
struct is_string_map<std::map<std::string, T, C, A>> : std::true_type {};
template <class T>
struct is_optional : std::false_type {};
template <class T>
struct is_optional<std::optional<T>> : std::true_type {};

// Stands in for a visitor when detecting whether a type has `visit`.
struct AnyVisitor {
  template <class... Args>
  void operator()(Args&&...) {}
  void renamed(const char*, const char*) {}
};
template <class T, class = void>
struct has_visit : std::false_type {};
template <class T>
struct has_visit<T, std::void_t<decltype(std::declval<T&>().visit(std::declval<AnyVisitor&>()))>>
    : std::true_type {};
template <class T, class = void>
struct has_validate : std::false_type {};
template <class T>
struct has_validate<T, std::void_t<decltype(std::declval<const T&>().validate())>> : std::true_type {};

template <class T>
inline constexpr bool always_false = false;

template <class T>
void decode(const YAML::Node& node, T& out, const Context& ctx);

// Reads the fields of one struct from a map node; remembers the names to report unknown keys.
class Reader {
 public:
  Reader(const YAML::Node& node, const Context& ctx) : node_(node), ctx_(ctx) {}
  template <class T>
  void operator()(const char* name, T& field, const Choices& choices = {}) {
    read(name, field, choices.empty() ? nullptr : &choices, nullptr);
  }
  template <class T>
  void operator()(const char* name, T& field, const Range& range) {
    read(name, field, nullptr, &range);
  }
  void renamed(const char*, const char*) {}  // RenameCheck has looked for old spellings already
  void check_unknown_keys() const;

 private:
  template <class T>
  void read(const char* name, T& field, const Choices* choices, const Range* range) {
    known_.emplace_back(name);
    if (!node_.IsMap()) return;
    YAML::Node value = node_[name];
    if (!value.IsDefined()) return;
    decode(value, field, Context{ctx_.file, join_key(ctx_.path, name), choices, range});
  }
  const YAML::Node& node_;
  const Context& ctx_;
  std::vector<std::string> known_;
};

// Looks for the old spellings of one struct's `v.renamed(old, new)` calls in what is given for it. It runs
// before the fields are read, so an old key fails as renamed rather than as unknown, and an old value
// rather than as a bad choice.
class RenameCheck {
 public:
  // Every key of the map being read.
  RenameCheck(const YAML::Node& map, const Context& ctx);
  // One key of a dotted path (`--set`, sweep keys); `value` is what the path sets when the key is its last.
  RenameCheck(const std::string& key, bool last, const YAML::Node& value, const Context& ctx);
  template <class T>
  void operator()(const char*, T&, const Choices& = {}) {}
  template <class T>
  void operator()(const char*, T&, const Range&) {}
  void renamed(const std::string& old_spelling, const std::string& new_spelling) const;

 private:
  struct Given {
    std::string key;
    YAML::Node at;  // where messages point
    std::optional<YAML::Node> value;
  };
  std::vector<Given> given_;
  const Context& ctx_;
};

template <class T>
void decode_struct(const YAML::Node& node, T& out, const Context& ctx) {
  require(node.IsMap() || node.IsNull(), ctx, node, "a map");
  RenameCheck renames(node, ctx);
  out.visit(renames);
  Reader reader(node, ctx);
  out.visit(reader);
  reader.check_unknown_keys();
  if constexpr (has_validate<T>::value) {
    try {
      out.validate();
    } catch (const Error& error) {
      rethrow_with_location(ctx, node, error);
    }
  }
}

template <class T>
void decode(const YAML::Node& node, T& out, const Context& ctx) {
  if constexpr (std::is_same_v<T, bool>) {
    out = decode_bool(node, ctx);
  } else if constexpr (std::is_integral_v<T>) {
    constexpr bool wider_than_int64 = static_cast<std::uint64_t>(std::numeric_limits<T>::max()) >
                                      static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
    constexpr std::int64_t max = wider_than_int64 ? std::numeric_limits<std::int64_t>::max()
                                                  : std::int64_t(std::numeric_limits<T>::max());
    out = static_cast<T>(decode_int64(node, ctx, std::int64_t(std::numeric_limits<T>::min()), max));
    if (ctx.range) check_range(double(out), ctx, node);
  } else if constexpr (std::is_floating_point_v<T>) {
    out = static_cast<T>(decode_double(node, ctx));
    if (ctx.range) check_range(double(out), ctx, node);
  } else if constexpr (std::is_same_v<T, std::string>) {
    out = decode_string(node, ctx);
  } else if constexpr (std::is_same_v<T, YAML::Node>) {
    // Shares the parsed node so later errors about its contents still have line numbers; reset
    // rebinds, where operator= would overwrite whatever node `out` referred to.
    out.reset(node);
  } else if constexpr (is_optional<T>::value) {
    if (node.IsNull()) {
      out.reset();
    } else {
      auto value = out.value_or(typename T::value_type{});
      decode(node, value, ctx);
      out = std::move(value);
    }
  } else if constexpr (is_vector<T>::value) {
    // A single string where a list of strings is expected is a list of one: `--map group_fields=scenario`.
    if constexpr (std::is_same_v<typename T::value_type, std::string>) {
      if (node.IsScalar()) {
        out = {decode_string(node, ctx)};
        return;
      }
    }
    require(node.IsSequence(), ctx, node, "a list");
    T values;
    for (std::size_t i = 0; i < node.size(); ++i) {
      typename T::value_type value{};
      decode(node[i], value,
             Context{ctx.file, ctx.path + "[" + std::to_string(i) + "]", ctx.choices, ctx.range});
      values.push_back(std::move(value));
    }
    out = std::move(values);
  } else if constexpr (is_string_map<T>::value) {
    require(node.IsMap() || node.IsNull(), ctx, node, "a map");
    T values;
    for (const auto& item : node) {
      std::string key = item.first.Scalar();
      typename T::mapped_type value{};
      decode(item.second, value, Context{ctx.file, join_key(ctx.path, key), ctx.choices, ctx.range});
      values[key] = std::move(value);
    }
    out = std::move(values);
  } else if constexpr (has_visit<T>::value) {
    decode_struct(node, out, ctx);
  } else {
    static_assert(always_false<T>, "config field type not supported: add a case to config_detail::decode");
  }
}

template <class T>
YAML::Node encode(const T& value);

class Writer {
 public:
  template <class T>
  void operator()(const char* name, const T& field, const Choices& = {}) {
    node_[name] = encode(field);
  }
  template <class T>
  void operator()(const char* name, const T& field, const Range&) {
    node_[name] = encode(field);
  }
  void renamed(const char*, const char*) {}
  YAML::Node node_{YAML::NodeType::Map};
};

template <class T>
YAML::Node encode(const T& value) {
  if constexpr (std::is_same_v<T, bool>) {
    return YAML::Node(value ? "true" : "false");
  } else if constexpr (std::is_integral_v<T>) {
    return YAML::Node(std::to_string(value));
  } else if constexpr (std::is_floating_point_v<T>) {
    return YAML::Node(encode_double(static_cast<double>(value)));
  } else if constexpr (std::is_same_v<T, std::string>) {
    return YAML::Node(value);
  } else if constexpr (std::is_same_v<T, YAML::Node>) {
    return YAML::Clone(value);
  } else if constexpr (is_optional<T>::value) {
    return value ? encode(*value) : YAML::Node(YAML::NodeType::Null);
  } else if constexpr (is_vector<T>::value) {
    YAML::Node node(YAML::NodeType::Sequence);
    for (const auto& item : value) node.push_back(encode(item));
    return node;
  } else if constexpr (is_string_map<T>::value) {
    YAML::Node node(YAML::NodeType::Map);
    for (const auto& [key, item] : value) node[key] = encode(item);
    return node;
  } else if constexpr (has_visit<T>::value) {
    Writer writer;
    // visit is non-const by design (one method serves reading and writing); writing does not mutate.
    const_cast<T&>(value).visit(writer);
    return writer.node_;
  } else {
    static_assert(always_false<T>, "config field type not supported: add a case to config_detail::encode");
  }
}

// Follows a dotted key through the field tree; at the end decodes `value` (if given) into the field.
template <class T>
void resolve(T& field, const std::vector<std::string>& segments, std::size_t index, const YAML::Node& value,
             const Context& ctx);

class PathVisitor {
 public:
  PathVisitor(const std::vector<std::string>& segments, std::size_t index, const YAML::Node& value,
              const Context& ctx)
      : segments_(segments), index_(index), value_(value), ctx_(ctx) {}
  template <class T>
  void operator()(const char* name, T& field, const Choices& choices = {}) {
    visit_field(name, field, choices.empty() ? nullptr : &choices, nullptr);
  }
  template <class T>
  void operator()(const char* name, T& field, const Range& range) {
    visit_field(name, field, nullptr, &range);
  }
  void renamed(const char*, const char*) {}  // RenameCheck has looked for old spellings already
  bool found_ = false;
  std::vector<std::string> known_;

 private:
  template <class T>
  void visit_field(const char* name, T& field, const Choices* choices, const Range* range) {
    known_.emplace_back(name);
    if (found_ || segments_[index_] != name) return;
    found_ = true;
    resolve(field, segments_, index_ + 1, value_,
            Context{ctx_.file, join_key(ctx_.path, name), choices, range});
  }
  const std::vector<std::string>& segments_;
  std::size_t index_;
  const YAML::Node& value_;
  const Context& ctx_;
};

[[noreturn]] void not_a_map(const Context& ctx, const std::string& key);

template <class T>
void resolve(T& field, const std::vector<std::string>& segments, std::size_t index, const YAML::Node& value,
             const Context& ctx) {
  if (index == segments.size()) {
    if (value.IsDefined()) decode(value, field, ctx);
    return;
  }
  if constexpr (has_visit<T>::value) {
    RenameCheck renames(segments[index], index + 1 == segments.size(), value, ctx);
    field.visit(renames);
    PathVisitor visitor(segments, index, value, ctx);
    field.visit(visitor);
    if (!visitor.found_) unknown_key(ctx, value, segments[index], visitor.known_);
  } else if constexpr (is_string_map<T>::value) {
    auto& item = field[segments[index]];
    resolve(item, segments, index + 1, value,
            Context{ctx.file, join_key(ctx.path, segments[index]), ctx.choices, ctx.range});
  } else if constexpr (is_optional<T>::value) {
    if (!field) field.emplace();
    resolve(*field, segments, index, value, ctx);
  } else {
    not_a_map(ctx, segments[index]);
  }
}

std::vector<std::string> split_key(const std::string& dotted, const std::string& where);

}  // namespace config_detail

// Reads a T from a YAML node; `file` names the source in error messages ("FILE:LINE: ...").
template <class T>
T read_config(const YAML::Node& node, const std::string& file) {
  T config{};
  config_detail::decode_struct(node, config, config_detail::Context{file, "", nullptr});
  return config;
}

template <class T>
T read_config_file(const std::string& path) {
  return read_config<T>(load_yaml_file(path), path);
}

// The resolved configuration as YAML: every field, defaults included, in visit order.
template <class T>
YAML::Node to_yaml(const T& config) {
  return config_detail::encode(config);
}

template <class T>
std::string dump_config(const T& config) {
  return dump_yaml(to_yaml(config));
}

// Stable across runs and machines: the hash of the dumped text.
template <class T>
std::string config_hash(const T& config) {
  return stable_hash(dump_config(config));
}

// Checks that the dotted key names a field of T (any key below a map field is allowed) and, when
// `value` is defined, that it converts to the field's type. Throws grm::Error prefixed with `where`
// (or the value's file:line when it has one).
template <class T>
void check_config_key(const std::string& dotted, const YAML::Node& value, const std::string& where) {
  T config{};
  config_detail::resolve(config, config_detail::split_key(dotted, where), 0, value,
                         config_detail::Context{where, "", nullptr});
}

// Sets one field of a typed config from a dotted key and a YAML value, with the same checks.
template <class T>
void set_config_key(T& config, const std::string& dotted, const YAML::Node& value, const std::string& where) {
  config_detail::resolve(config, config_detail::split_key(dotted, where), 0, value,
                         config_detail::Context{where, "", nullptr});
}

// check_config_key<T> as a callable, for code that is not templated on T (sweep expansion).
using ConfigKeyCheck =
    std::function<void(const std::string& dotted, const YAML::Node& value, const std::string& where)>;
template <class T>
ConfigKeyCheck config_key_check() {
  return [](const std::string& dotted, const YAML::Node& value, const std::string& where) {
    check_config_key<T>(dotted, value, where);
  };
}

// Validates an override against T, then applies it to the untyped node: "--set KEY=VALUE: ..." errors.
template <class T>
void apply_checked_override(YAML::Node& root, const std::string& assignment) {
  auto [key, value] = parse_override(assignment);
  check_config_key<T>(key, value, "--set " + assignment);
  set_yaml_path(root, key, value, "--set " + assignment);
}

}  // namespace grm
