#include "core/config.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <set>

#include "core/atomic_file.hpp"

namespace grm {

namespace {

std::string join(const std::vector<std::string>& items, const char* separator) {
  std::string out;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i) out += separator;
    out += items[i];
  }
  return out;
}

std::string describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Scalar:
      return "'" + node.Scalar() + "'";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a map";
    default:
      return "nothing (null)";
  }
}

std::string key_name(const std::string& path) {
  return path.empty() ? "the top level" : "'" + path + "'";
}

// A copy sharing no storage with `node`, so later edits of either leave the other alone. It carries no
// source marks: errors about it name the origin (`--set ...`) instead of a misleading line.
YAML::Node fresh_copy(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Scalar:
      return YAML::Node(node.Scalar());
    case YAML::NodeType::Sequence: {
      YAML::Node copy(YAML::NodeType::Sequence);
      for (const auto& item : node) copy.push_back(fresh_copy(item));
      return copy;
    }
    case YAML::NodeType::Map: {
      YAML::Node copy(YAML::NodeType::Map);
      for (const auto& item : node) copy[item.first.Scalar()] = fresh_copy(item.second);
      return copy;
    }
    default:
      return YAML::Node(YAML::NodeType::Null);
  }
}

bool is_scalar_list(const YAML::Node& node) {
  return std::all_of(node.begin(), node.end(), [](const YAML::Node& item) { return item.IsScalar(); });
}

void emit(YAML::Emitter& out, const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Scalar:
      out << node.Scalar();
      break;
    case YAML::NodeType::Sequence:
      if (is_scalar_list(node)) out << YAML::Flow;
      out << YAML::BeginSeq;
      for (const auto& item : node) emit(out, item);
      out << YAML::EndSeq;
      break;
    case YAML::NodeType::Map:
      if (node.size() == 0) out << YAML::Flow;
      out << YAML::BeginMap;
      for (const auto& item : node) {
        out << YAML::Key << item.first.Scalar() << YAML::Value;
        emit(out, item.second);
      }
      out << YAML::EndMap;
      break;
    default:
      out << YAML::Null;
  }
}

}  // namespace

YAML::Node load_yaml_text(const std::string& text, const std::string& source) {
  try {
    return YAML::Load(text);
  } catch (const YAML::ParserException& error) {
    fail("{}:{}:{}: YAML syntax error: {}", source, error.mark.line + 1, error.mark.column + 1, error.msg);
  }
}

YAML::Node load_yaml_file(const std::string& path) {
  return load_yaml_text(read_file(path), path);
}

std::string dump_yaml(const YAML::Node& node) {
  YAML::Emitter out;
  emit(out, node);
  return std::string(out.c_str()) + "\n";
}

std::string stable_hash(std::string_view text) {
  std::uint64_t hash = 0xcbf29ce484222325ULL;
  for (unsigned char c : text) {
    hash ^= c;
    hash *= 0x100000001b3ULL;
  }
  return fmt::format("{:016x}", hash);
}

void set_yaml_path(YAML::Node& root, const std::string& dotted, const YAML::Node& value,
                   const std::string& where) {
  std::vector<std::string> segments = config_detail::split_key(dotted, where);
  if (!root.IsDefined() || root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  if (!root.IsMap()) fail("{}: the configuration is not a map, cannot set '{}'", where, dotted);
  YAML::Node current = root;
  std::string prefix;
  for (std::size_t i = 0; i + 1 < segments.size(); ++i) {
    prefix = config_detail::join_key(prefix, segments[i]);
    YAML::Node next = current[segments[i]];
    if (!next.IsDefined() || next.IsNull()) {
      next = YAML::Node(YAML::NodeType::Map);
    } else if (!next.IsMap()) {
      fail("{}: '{}' is a single value, it has no key '{}'", where, prefix, segments[i + 1]);
    }
    // reset rebinds the handle; operator= would overwrite the node it refers to.
    current.reset(next);
  }
  current[segments.back()] = fresh_copy(value);
}

std::pair<std::string, YAML::Node> parse_override(const std::string& assignment) {
  std::size_t equals = assignment.find('=');
  if (equals == std::string::npos || equals == 0)
    fail("--set '{}': expected KEY=VALUE, e.g. rm.alpha=0.05", assignment);
  std::string key = assignment.substr(0, equals);
  std::string text = assignment.substr(equals + 1);
  config_detail::split_key(key, "--set " + assignment);
  YAML::Node value(YAML::NodeType::Null);
  if (!text.empty()) {
    try {
      value = fresh_copy(YAML::Load(text));
    } catch (const YAML::ParserException& error) {
      fail("--set '{}': the value is not valid YAML ({}); quote it", assignment, error.msg);
    }
  }
  return {key, value};
}

void apply_override(YAML::Node& root, const std::string& assignment) {
  auto [key, value] = parse_override(assignment);
  set_yaml_path(root, key, value, "--set " + assignment);
}

std::string Range::describe() const {
  auto number = [](double x) { return fmt::format("{}", x); };
  bool no_lo = std::isinf(lo), no_hi = std::isinf(hi);
  if (no_lo && no_hi) return "any finite number";
  if (no_hi) return fmt::format("{} {}", lo_open ? ">" : ">=", number(lo));
  if (no_lo) return fmt::format("{} {}", hi_open ? "<" : "<=", number(hi));
  return fmt::format("in {}{}, {}{}", lo_open ? "(" : "[", number(lo), number(hi), hi_open ? ")" : "]");
}

namespace config_detail {

std::string location(const std::string& file, const YAML::Node& node) {
  if (!node.IsDefined() || node.Mark().is_null()) return file;
  return fmt::format("{}:{}", file, node.Mark().line + 1);
}

std::string join_key(const std::string& prefix, const std::string& key) {
  return prefix.empty() ? key : prefix + "." + key;
}

void type_error(const Context& ctx, const YAML::Node& node, const char* expected) {
  fail("{}: {} must be {}, got {}", location(ctx.file, node), key_name(ctx.path), expected, describe(node));
}

void require(bool ok, const Context& ctx, const YAML::Node& node, const char* expected) {
  if (!ok) type_error(ctx, node, expected);
}

bool decode_bool(const YAML::Node& node, const Context& ctx) {
  require(node.IsScalar(), ctx, node, "true or false");
  std::string text = node.Scalar();
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return std::tolower(c); });
  if (text == "true" || text == "yes" || text == "on") return true;
  if (text == "false" || text == "no" || text == "off") return false;
  type_error(ctx, node, "true or false");
}

std::int64_t decode_int64(const YAML::Node& node, const Context& ctx, std::int64_t min, std::int64_t max) {
  require(node.IsScalar(), ctx, node, "an integer");
  const std::string& text = node.Scalar();
  const char* begin = text.data() + (!text.empty() && text[0] == '+');
  std::int64_t value = 0;
  auto [end, error] = std::from_chars(begin, text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size() || text.empty()) {
    type_error(ctx, node, "an integer");
  }
  if (value < min || value > max) {
    fail("{}: {} must be an integer in [{}, {}], got {}", location(ctx.file, node), key_name(ctx.path), min,
         max, describe(node));
  }
  return value;
}

double decode_double(const YAML::Node& node, const Context& ctx) {
  require(node.IsScalar(), ctx, node, "a number");
  const std::string& text = node.Scalar();
  // No config number means anything when infinite or NaN: a NaN weight would train on NaN losses.
  static const char* yaml_non_finite[] = {".inf", "+.inf", "-.inf", ".Inf", "+.Inf", "-.Inf",
                                          ".INF", "+.INF", "-.INF", ".nan", ".NaN",  ".NAN"};
  for (const char* spelling : yaml_non_finite)
    if (text == spelling)
      fail("{}: {} must be a finite number, got {}", location(ctx.file, node), key_name(ctx.path),
           describe(node));
  const char* begin = text.data() + (!text.empty() && text[0] == '+');
  double value = 0;
  auto [end, error] = std::from_chars(begin, text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size() || text.empty()) {
    type_error(ctx, node, "a number");
  }
  if (!std::isfinite(value))  // from_chars reads "inf", "infinity" and "nan" too, and overflows to inf
    fail("{}: {} must be a finite number, got {}", location(ctx.file, node), key_name(ctx.path),
         describe(node));
  return value;
}

void check_range(double value, const Context& ctx, const YAML::Node& node) {
  if (!ctx.range->contains(value))
    fail("{}: {} must be {}, got {}", location(ctx.file, node), key_name(ctx.path), ctx.range->describe(),
         describe(node));
}

std::string decode_string(const YAML::Node& node, const Context& ctx) {
  require(node.IsScalar(), ctx, node, "a string");
  const std::string& value = node.Scalar();
  if (ctx.choices && std::find(ctx.choices->begin(), ctx.choices->end(), value) == ctx.choices->end()) {
    fail("{}: {} must be one of {}; got '{}'", location(ctx.file, node), key_name(ctx.path),
         join(*ctx.choices, ", "), value);
  }
  return value;
}

std::string encode_double(double value) {
  if (std::isnan(value)) return ".nan";
  if (std::isinf(value)) return value > 0 ? ".inf" : "-.inf";
  char buffer[64];
  auto result = std::to_chars(buffer, buffer + sizeof buffer, value);
  std::string text(buffer, result.ptr);
  // Keep a visible decimal point so the dumped YAML reads as a real number.
  if (text.find_first_of(".e") == std::string::npos) text += ".0";
  return text;
}

void Reader::check_unknown_keys() const {
  if (!node_.IsMap()) return;
  std::set<std::string> seen;
  for (const auto& item : node_) {
    const std::string& key = item.first.Scalar();
    if (std::find(known_.begin(), known_.end(), key) == known_.end())
      unknown_key(ctx_, item.first, key, known_);
    if (!seen.insert(key).second) {
      fail("{}: duplicate key '{}'", location(ctx_.file, item.first), join_key(ctx_.path, key));
    }
  }
}

RenameCheck::RenameCheck(const YAML::Node& map, const Context& ctx) : ctx_(ctx) {
  if (!map.IsMap()) return;
  for (const auto& item : map) given_.push_back({item.first.Scalar(), item.first, item.second});
}

RenameCheck::RenameCheck(const std::string& key, bool last, const YAML::Node& value, const Context& ctx)
    : ctx_(ctx) {
  given_.push_back({key, value, last && value.IsDefined() ? std::optional<YAML::Node>(value) : std::nullopt});
}

void RenameCheck::renamed(const std::string& old_spelling, const std::string& new_spelling) const {
  std::size_t colon = old_spelling.find(": ");
  std::string key = old_spelling.substr(0, colon);
  for (const auto& given : given_) {
    if (given.key != key) continue;
    if (colon == std::string::npos) {
      fail("{}: '{}' was renamed to '{}'", location(ctx_.file, given.at), join_key(ctx_.path, old_spelling),
           join_key(ctx_.path, new_spelling));
    }
    if (given.value && given.value->IsScalar() && given.value->Scalar() == old_spelling.substr(colon + 2)) {
      fail("{}: '{}' was renamed to '{}'", location(ctx_.file, *given.value),
           join_key(ctx_.path, old_spelling), join_key(ctx_.path, new_spelling));
    }
  }
}

void unknown_key(const Context& ctx, const YAML::Node& key_node, const std::string& key,
                 const std::vector<std::string>& known) {
  fail("{}: unknown key '{}' (known: {})", location(ctx.file, key_node), join_key(ctx.path, key),
       join(known, ", "));
}

void rethrow_with_location(const Context& ctx, const YAML::Node& node, const Error& error) {
  if (ctx.path.empty()) fail("{}: {}", location(ctx.file, node), error.what());
  fail("{}: in '{}': {}", location(ctx.file, node), ctx.path, error.what());
}

void not_a_map(const Context& ctx, const std::string& key) {
  fail("{}: '{}' is a single value, it has no key '{}'", ctx.file, ctx.path, key);
}

std::vector<std::string> split_key(const std::string& dotted, const std::string& where) {
  std::vector<std::string> segments;
  std::size_t start = 0;
  while (true) {
    std::size_t dot = dotted.find('.', start);
    std::string segment = dotted.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (segment.empty() || segment.find_first_of(" \t") != std::string::npos) {
      fail("{}: bad key '{}' (expected dotted names like rm.alpha)", where, dotted);
    }
    segments.push_back(segment);
    if (dot == std::string::npos) return segments;
    start = dot + 1;
  }
}

}  // namespace config_detail

}  // namespace grm
