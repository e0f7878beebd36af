// The Jinja interpreter: values with Python semantics, a lexer that applies jinja2's whitespace rules, a
// recursive-descent parser to an AST, and a tree-walking renderer. See jinja.hpp for the subset.
#include "policy/jinja.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "core/error.hpp"

namespace grm::jinja {
namespace {

// ---------------------------------------------------------------------------------------------- errors

// A runtime error without its location; render() prefixes the template name and the line being run.
struct RuntimeFailure {
  std::string message;
};
// raise_exception(message) called by the template itself.
struct RaisedByTemplate {
  std::string message;
};

template <typename... Args>
[[noreturn]] void runtime_fail(fmt::format_string<Args...> format, Args&&... args) {
  throw RuntimeFailure{fmt::format(format, std::forward<Args>(args)...)};
}

// ---------------------------------------------------------------------------------------------- UTF-8

void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xC0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xE0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  }
}

// Malformed bytes decode to themselves (as U+0080..U+00FF would not round-trip, they are kept as
// U+DC80..U+DCFF, Python's surrogateescape), so text always survives a decode/encode round trip.
std::u32string decode_utf8(std::string_view text) {
  std::u32string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    auto byte = static_cast<unsigned char>(text[i]);
    int n_continuation = byte >= 0xF0 ? 3 : byte >= 0xE0 ? 2 : byte >= 0xC0 ? 1 : 0;
    char32_t c = n_continuation == 3 ? byte & 0x07 : n_continuation == 2 ? byte & 0x0F : byte & 0x1F;
    bool valid = byte < 0x80 || (byte >= 0xC0 && byte < 0xF8 && i + n_continuation < text.size());
    for (int k = 1; valid && k <= n_continuation; ++k) {
      auto next = static_cast<unsigned char>(text[i + k]);
      valid = (next & 0xC0) == 0x80;
      c = (c << 6) | (next & 0x3F);
    }
    if (byte < 0x80) {
      out += byte;
      ++i;
    } else if (valid) {
      out += c;
      i += n_continuation + 1;
    } else {
      out += static_cast<char32_t>(0xDC00 + byte);
      ++i;
    }
  }
  return out;
}

std::string encode_utf8(std::u32string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char32_t c : text) {
    if (c >= 0xDC80 && c <= 0xDCFF)
      out += static_cast<char>(c - 0xDC00);
    else
      append_utf8(out, c);
  }
  return out;
}

// Python's str.isspace().
bool is_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

// Simple case mapping for ASCII, Latin-1, Greek and Cyrillic (see jinja.hpp).
char32_t to_upper(char32_t c) {
  if (c >= 'a' && c <= 'z') return c - 32;
  if (c < 0x80) return c;
  if ((c >= 0xE0 && c <= 0xFE && c != 0xF7)) return c - 32;
  if (c == 0xFF) return 0x178;
  if (c >= 0x3B1 && c <= 0x3C9 && c != 0x3C2) return c - 32;
  if (c >= 0x430 && c <= 0x44F) return c - 32;
  if (c >= 0x450 && c <= 0x45F) return c - 80;
  return c;
}

char32_t to_lower(char32_t c) {
  if (c >= 'A' && c <= 'Z') return c + 32;
  if (c < 0x80) return c;
  if ((c >= 0xC0 && c <= 0xDE && c != 0xD7)) return c + 32;
  if (c == 0x178) return 0xFF;
  if (c >= 0x391 && c <= 0x3A9 && c != 0x3A2) return c + 32;
  if (c >= 0x410 && c <= 0x42F) return c + 32;
  if (c >= 0x400 && c <= 0x40F) return c + 80;
  return c;
}

// U+00DF (sharp s) is a lower-case letter without a one-character upper case.
bool is_lower_char(char32_t c) {
  return to_upper(c) != c || c == 0xDF;
}
bool is_upper_char(char32_t c) {
  return to_lower(c) != c;
}
bool is_cased(char32_t c) {
  return is_lower_char(c) || is_upper_char(c);
}

std::string map_chars(const std::string& text, char32_t (*mapping)(char32_t)) {
  std::u32string chars = decode_utf8(text);
  for (char32_t& c : chars) c = mapping(c);
  return encode_utf8(chars);
}

// str.upper(): as map_chars(to_upper), and U+00DF (sharp s) becomes "SS" as in Python.
std::string upper(const std::string& text) {
  std::string out;
  for (char32_t c : decode_utf8(text)) {
    if (c == 0xDF)
      out += "SS";
    else
      append_utf8(out, to_upper(c));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------- values

struct Value;
using List = std::vector<Value>;
struct Dict;
struct Object;
struct Callable;
struct CallArgs;
class Renderer;

// A Python value as a template sees it. Lists and dicts are shared and never mutated once built (the
// sandbox is immutable); namespace() objects are the one mutable kind.
struct Value {
  enum class Kind {
    undefined,
    none,
    boolean,
    integer,
    floating,
    string,
    list,
    tuple,
    dict,
    object,
    callable
  };
  Kind kind = Kind::undefined;
  bool boolean = false;
  int64_t integer = 0;
  double floating = 0;
  std::string text;  // string: the UTF-8 text; undefined: the UndefinedError message using it would raise
  std::shared_ptr<const List> items;         // list, tuple
  std::shared_ptr<const Dict> dict;          // dict
  std::shared_ptr<Object> object;            // namespace or loop
  std::shared_ptr<const Callable> callable;  // macro, builtin, bound method

  static Value undefined(std::string why) {
    Value v;
    v.text = std::move(why);
    return v;
  }
  static Value none() { return of_kind(Kind::none); }
  static Value from_bool(bool b) {
    Value v = of_kind(Kind::boolean);
    v.boolean = b;
    return v;
  }
  static Value from_int(int64_t i) {
    Value v = of_kind(Kind::integer);
    v.integer = i;
    return v;
  }
  static Value from_double(double d) {
    Value v = of_kind(Kind::floating);
    v.floating = d;
    return v;
  }
  static Value from_string(std::string s) {
    Value v = of_kind(Kind::string);
    v.text = std::move(s);
    return v;
  }
  static Value from_list(List list, bool tuple = false) {
    Value v = of_kind(tuple ? Kind::tuple : Kind::list);
    v.items = std::make_shared<const List>(std::move(list));
    return v;
  }
  static Value from_dict(Dict dict);
  static Value from_object(std::shared_ptr<Object> object) {
    Value v = of_kind(Kind::object);
    v.object = std::move(object);
    return v;
  }
  static Value from_callable(std::string name, std::function<Value(Renderer&, CallArgs&)> invoke);

  bool is_undefined() const { return kind == Kind::undefined; }
  bool is_string() const { return kind == Kind::string; }
  bool is_sequence() const { return kind == Kind::list || kind == Kind::tuple; }
  // bool is an int in Python arithmetic and comparisons.
  bool is_number() const { return kind == Kind::boolean || kind == Kind::integer || kind == Kind::floating; }
  bool is_integral() const { return kind == Kind::boolean || kind == Kind::integer; }
  int64_t as_int() const { return kind == Kind::boolean ? boolean : integer; }
  double as_double() const { return kind == Kind::floating ? floating : static_cast<double>(as_int()); }

 private:
  static Value of_kind(Kind kind) {
    Value v;
    v.kind = kind;
    return v;
  }
};

bool equal(const Value& a, const Value& b);

// Insertion-ordered, as Python dicts are; the dicts of chat templates are small, so lookup is linear.
struct Dict {
  std::vector<std::pair<Value, Value>> entries;

  const Value* find(const Value& key) const {
    for (const auto& [k, v] : entries)
      if (equal(k, key)) return &v;
    return nullptr;
  }
  void set(Value key, Value value) {
    for (auto& [k, v] : entries) {
      if (equal(k, key)) {
        v = std::move(value);
        return;
      }
    }
    entries.emplace_back(std::move(key), std::move(value));
  }
};

Value Value::from_dict(Dict dict) {
  Value v = of_kind(Kind::dict);
  v.dict = std::make_shared<const Dict>(std::move(dict));
  return v;
}

// namespace() objects, whose attributes {% set ns.x = ... %} assigns, and the read-only `loop`.
struct Object {
  enum class Type { name_space, loop };
  Type type;
  std::vector<std::pair<std::string, Value>> attributes;

  const Value* find(const std::string& name) const {
    for (const auto& [k, v] : attributes)
      if (k == name) return &v;
    return nullptr;
  }
  void set(const std::string& name, Value value) {
    for (auto& [k, v] : attributes) {
      if (k == name) {
        v = std::move(value);
        return;
      }
    }
    attributes.emplace_back(name, std::move(value));
  }
};

struct CallArgs {
  List positional;
  std::vector<std::pair<std::string, Value>> keyword;
};

struct Callable {
  std::string name;
  std::function<Value(Renderer&, CallArgs&)> invoke;
};

Value Value::from_callable(std::string name, std::function<Value(Renderer&, CallArgs&)> invoke) {
  Value v = of_kind(Kind::callable);
  v.callable = std::make_shared<const Callable>(Callable{std::move(name), std::move(invoke)});
  return v;
}

// Python's type(x).__name__, for error messages.
std::string type_name(const Value& v) {
  switch (v.kind) {
    case Value::Kind::undefined:
      return "Undefined";
    case Value::Kind::none:
      return "NoneType";
    case Value::Kind::boolean:
      return "bool";
    case Value::Kind::integer:
      return "int";
    case Value::Kind::floating:
      return "float";
    case Value::Kind::string:
      return "str";
    case Value::Kind::list:
      return "list";
    case Value::Kind::tuple:
      return "tuple";
    case Value::Kind::dict:
      return "dict";
    case Value::Kind::object:
      return v.object->type == Object::Type::loop ? "LoopContext" : "Namespace";
    case Value::Kind::callable:
      return "function";
  }
  return "object";
}

// jinja2's object_type_repr, used in "'dict object' has no attribute 'x'".
std::string object_type_repr(const Value& v) {
  return v.kind == Value::Kind::none ? "None" : type_name(v) + " object";
}

[[noreturn]] void fail_undefined(const Value& v) {
  throw RuntimeFailure{v.text};
}

bool truthy(const Value& v) {
  switch (v.kind) {
    case Value::Kind::undefined:
    case Value::Kind::none:
      return false;
    case Value::Kind::boolean:
      return v.boolean;
    case Value::Kind::integer:
      return v.integer != 0;
    case Value::Kind::floating:
      return v.floating != 0;
    case Value::Kind::string:
      return !v.text.empty();
    case Value::Kind::list:
    case Value::Kind::tuple:
      return !v.items->empty();
    case Value::Kind::dict:
      return !v.dict->entries.empty();
    default:
      return true;
  }
}

// ---------------------------------------------------------------------------------------------- printing

// Python's repr(float): the shortest digits that round-trip, positional for exponents in [-4, 16).
std::string float_repr(double x) {
  if (std::isnan(x)) return "nan";
  if (std::isinf(x)) return x > 0 ? "inf" : "-inf";
  if (x == 0) return std::signbit(x) ? "-0.0" : "0.0";
  char buffer[40];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buffer, sizeof buffer, "%.*e", precision - 1, x);
    if (std::strtod(buffer, nullptr) == x) break;
  }
  std::string scientific = buffer;
  std::string sign = scientific[0] == '-' ? "-" : "";
  if (!sign.empty()) scientific.erase(0, 1);
  size_t e = scientific.find('e');
  int exponent = std::atoi(scientific.c_str() + e + 1);
  std::string digits = scientific.substr(0, e);
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  if (exponent >= -4 && exponent < 16) {
    if (exponent < 0) return sign + "0." + std::string(-exponent - 1, '0') + digits;
    std::string integer_part = digits.substr(0, std::min<size_t>(digits.size(), exponent + 1));
    integer_part += std::string(exponent + 1 - integer_part.size(), '0');
    std::string fraction = digits.size() > size_t(exponent + 1) ? digits.substr(exponent + 1) : "0";
    return sign + integer_part + "." + fraction;
  }
  std::string mantissa = digits.substr(0, 1) + (digits.size() > 1 ? "." + digits.substr(1) : "");
  return fmt::format("{}{}e{}{:02d}", sign, mantissa, exponent < 0 ? '-' : '+', std::abs(exponent));
}

// str.isprintable() is false for these: repr() escapes them.
bool is_unprintable(char32_t c) {
  return c < 0x20 || (c >= 0x7F && c <= 0xA0) || c == 0xAD || c == 0x1680 || (c >= 0x2000 && c <= 0x200F) ||
         (c >= 0x2028 && c <= 0x202F) || (c >= 0x205F && c <= 0x206F) || c == 0x3000 ||
         (c >= 0xD800 && c <= 0xF8FF) || c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFB);
}

std::string string_repr(const std::string& text) {
  bool has_single = text.find('\'') != std::string::npos, has_double = text.find('"') != std::string::npos;
  char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  for (char32_t c : decode_utf8(text)) {
    if (c == static_cast<char32_t>(quote) || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (is_unprintable(c)) {
      out += c < 0x100 ? fmt::format("\\x{:02x}", uint32_t(c)) : fmt::format("\\u{:04x}", uint32_t(c));
    } else {
      append_utf8(out, c);
    }
  }
  return out + quote;
}

std::string repr(const Value& v);

// Python's str().
std::string to_str(const Value& v) {
  switch (v.kind) {
    case Value::Kind::undefined:
      return "";
    case Value::Kind::none:
      return "None";
    case Value::Kind::boolean:
      return v.boolean ? "True" : "False";
    case Value::Kind::integer:
      return std::to_string(v.integer);
    case Value::Kind::floating:
      return float_repr(v.floating);
    case Value::Kind::string:
      return v.text;
    case Value::Kind::object: {
      if (v.object->type == Object::Type::loop) return "<LoopContext>";
      Dict attributes;
      for (const auto& [k, value] : v.object->attributes) attributes.set(Value::from_string(k), value);
      return "<Namespace " + repr(Value::from_dict(attributes)) + ">";
    }
    case Value::Kind::callable:
      return "<function " + v.callable->name + ">";
    default:
      return repr(v);
  }
}

std::string repr(const Value& v) {
  switch (v.kind) {
    case Value::Kind::undefined:
      return "Undefined";
    case Value::Kind::string:
      return string_repr(v.text);
    case Value::Kind::list:
    case Value::Kind::tuple: {
      bool tuple = v.kind == Value::Kind::tuple;
      std::string out = tuple ? "(" : "[";
      for (size_t i = 0; i < v.items->size(); ++i) out += (i ? ", " : "") + repr((*v.items)[i]);
      if (tuple && v.items->size() == 1) out += ",";
      return out + (tuple ? ")" : "]");
    }
    case Value::Kind::dict: {
      std::string out = "{";
      bool first = true;
      for (const auto& [k, value] : v.dict->entries) {
        out += (first ? "" : ", ") + repr(k) + ": " + repr(value);
        first = false;
      }
      return out + "}";
    }
    default:
      return to_str(v);
  }
}

// ---------------------------------------------------------------------------------------------- semantics

bool equal(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_integral() && b.is_integral()) return a.as_int() == b.as_int();
    return a.as_double() == b.as_double();
  }
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Value::Kind::undefined:
    case Value::Kind::none:
      return true;
    case Value::Kind::string:
      return a.text == b.text;
    case Value::Kind::list:
    case Value::Kind::tuple:
      return a.items->size() == b.items->size() &&
             std::equal(a.items->begin(), a.items->end(), b.items->begin(), equal);
    case Value::Kind::dict: {
      if (a.dict->entries.size() != b.dict->entries.size()) return false;
      for (const auto& [k, value] : a.dict->entries) {
        const Value* other = b.dict->find(k);
        if (!other || !equal(value, *other)) return false;
      }
      return true;
    }
    case Value::Kind::object:
      return a.object == b.object;
    case Value::Kind::callable:
      return a.callable == b.callable;
    default:
      return false;
  }
}

// Python's ordering: -1, 0, 1, or a TypeError naming the operator.
int compare(const Value& a, const Value& b, std::string_view op) {
  if (a.is_undefined()) fail_undefined(a);
  if (b.is_undefined()) fail_undefined(b);
  if (a.is_number() && b.is_number()) {
    if (a.is_integral() && b.is_integral()) return a.as_int() < b.as_int() ? -1 : a.as_int() > b.as_int();
    return a.as_double() < b.as_double() ? -1 : a.as_double() > b.as_double();
  }
  if (a.is_string() && b.is_string())
    return a.text < b.text ? -1 : a.text > b.text;  // UTF-8 bytes sort as code points
  if (a.is_sequence() && a.kind == b.kind) {
    for (size_t i = 0; i < a.items->size() && i < b.items->size(); ++i) {
      if (equal((*a.items)[i], (*b.items)[i])) continue;
      return compare((*a.items)[i], (*b.items)[i], op);
    }
    return a.items->size() < b.items->size() ? -1 : a.items->size() > b.items->size();
  }
  runtime_fail("'{}' not supported between instances of '{}' and '{}'", op, type_name(a), type_name(b));
}

// What `for x in value` visits: items, dict keys, characters; an undefined value is empty.
List iterate(const Value& v) {
  switch (v.kind) {
    case Value::Kind::undefined:
      return {};
    case Value::Kind::list:
    case Value::Kind::tuple:
      return *v.items;
    case Value::Kind::dict: {
      List keys;
      for (const auto& entry : v.dict->entries) keys.push_back(entry.first);
      return keys;
    }
    case Value::Kind::string: {
      List chars;
      for (char32_t c : decode_utf8(v.text)) chars.push_back(Value::from_string(encode_utf8({&c, 1})));
      return chars;
    }
    default:
      runtime_fail("'{}' object is not iterable", type_name(v));
  }
}

int64_t length(const Value& v) {
  switch (v.kind) {
    case Value::Kind::undefined:
      return 0;
    case Value::Kind::string:
      return static_cast<int64_t>(decode_utf8(v.text).size());
    case Value::Kind::list:
    case Value::Kind::tuple:
      return static_cast<int64_t>(v.items->size());
    case Value::Kind::dict:
      return static_cast<int64_t>(v.dict->entries.size());
    default:
      runtime_fail("object of type '{}' has no len()", type_name(v));
  }
}

bool contains(const Value& container, const Value& item) {
  switch (container.kind) {
    case Value::Kind::undefined:
      return false;
    case Value::Kind::string:
      if (!item.is_string())
        runtime_fail("'in <string>' requires string as left operand, not {}", type_name(item));
      return container.text.find(item.text) != std::string::npos;
    case Value::Kind::list:
    case Value::Kind::tuple:
      return std::any_of(container.items->begin(), container.items->end(),
                         [&](const Value& element) { return equal(element, item); });
    case Value::Kind::dict:
      return container.dict->find(item) != nullptr;
    default:
      runtime_fail("argument of type '{}' is not iterable", type_name(container));
  }
}

// Python's floor division and modulo on integers.
int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}
int64_t floor_mod(int64_t a, int64_t b) {
  int64_t r = a % b;
  return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r;
}

Value repeat(const Value& sequence, int64_t times) {
  if (sequence.is_string()) {
    std::string out;
    for (int64_t i = 0; i < times; ++i) out += sequence.text;
    return Value::from_string(out);
  }
  List out;
  for (int64_t i = 0; i < times; ++i) out.insert(out.end(), sequence.items->begin(), sequence.items->end());
  return Value::from_list(out, sequence.kind == Value::Kind::tuple);
}

std::string percent_format(const std::string& format, const Value& args);

Value arithmetic(std::string_view op, const Value& a, const Value& b) {
  if (a.is_undefined()) fail_undefined(a);
  if (b.is_undefined()) fail_undefined(b);
  bool numbers = a.is_number() && b.is_number(), integers = a.is_integral() && b.is_integral();
  // Python integers do not overflow; grm's are 64-bit, and going past that is an error, never a wrap.
  auto checked = [&](bool overflowed, int64_t result) {
    if (overflowed) runtime_fail("integer overflow in {}: Jinja integers here are 64-bit", op);
    return Value::from_int(result);
  };
  int64_t result = 0;
  if (op == "+") {
    if (integers) {
      bool overflowed = __builtin_add_overflow(a.as_int(), b.as_int(), &result);
      return checked(overflowed, result);
    }
    if (numbers) return Value::from_double(a.as_double() + b.as_double());
    if (a.is_string() && b.is_string()) return Value::from_string(a.text + b.text);
    if (a.is_sequence() && a.kind == b.kind) {
      List joined = *a.items;
      joined.insert(joined.end(), b.items->begin(), b.items->end());
      return Value::from_list(joined, a.kind == Value::Kind::tuple);
    }
    if (a.is_string()) runtime_fail("can only concatenate str (not \"{}\") to str", type_name(b));
    if (a.is_sequence())
      runtime_fail("can only concatenate {} (not \"{}\") to {}", type_name(a), type_name(b), type_name(a));
  } else if (op == "-" && numbers) {
    if (integers) {
      bool overflowed = __builtin_sub_overflow(a.as_int(), b.as_int(), &result);
      return checked(overflowed, result);
    }
    return Value::from_double(a.as_double() - b.as_double());
  } else if (op == "*") {
    if (integers) {
      bool overflowed = __builtin_mul_overflow(a.as_int(), b.as_int(), &result);
      return checked(overflowed, result);
    }
    if (numbers) return Value::from_double(a.as_double() * b.as_double());
    if ((a.is_string() || a.is_sequence()) && b.is_integral()) return repeat(a, b.as_int());
    if ((b.is_string() || b.is_sequence()) && a.is_integral()) return repeat(b, a.as_int());
  } else if (op == "/" && numbers) {
    if (b.as_double() == 0) runtime_fail("division by zero");
    return Value::from_double(a.as_double() / b.as_double());
  } else if (op == "//" && numbers) {
    if (b.as_double() == 0) runtime_fail("integer division or modulo by zero");
    if (integers) return Value::from_int(floor_div(a.as_int(), b.as_int()));
    return Value::from_double(std::floor(a.as_double() / b.as_double()));
  } else if (op == "%") {
    if (a.is_string()) return Value::from_string(percent_format(a.text, b));
    if (numbers) {
      if (b.as_double() == 0) runtime_fail("integer division or modulo by zero");
      if (integers) return Value::from_int(floor_mod(a.as_int(), b.as_int()));
      double r = std::fmod(a.as_double(), b.as_double());
      if (r != 0 && ((r < 0) != (b.as_double() < 0))) r += b.as_double();
      return Value::from_double(r);
    }
  } else if (op == "**" && numbers) {
    if (integers && b.as_int() >= 0) {
      int64_t base = a.as_int(), exponent = b.as_int();
      if (base == 0 || base == 1 || base == -1)  // never overflows, and the exponent may be huge
        return Value::from_int(exponent == 0 ? 1 : base == -1 && exponent % 2 == 0 ? 1 : base);
      result = 1;
      bool overflowed = false;  // |base| >= 2 overflows within 64 multiplications
      for (int64_t i = 0; i < exponent && !overflowed; ++i)
        overflowed = __builtin_mul_overflow(result, base, &result);
      return checked(overflowed, result);
    }
    return Value::from_double(std::pow(a.as_double(), b.as_double()));
  }
  runtime_fail("unsupported operand type(s) for {}: '{}' and '{}'", op, type_name(a), type_name(b));
}

// ---------------------------------------------------------------------------------------------- JSON

Value from_json(const nlohmann::ordered_json& json) {
  switch (json.type()) {
    case nlohmann::ordered_json::value_t::null:
      return Value::none();
    case nlohmann::ordered_json::value_t::boolean:
      return Value::from_bool(json.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer:
      return Value::from_int(json.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: {
      auto u = json.get<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX)) return Value::from_double(static_cast<double>(u));
      return Value::from_int(static_cast<int64_t>(u));
    }
    case nlohmann::ordered_json::value_t::number_float:
      return Value::from_double(json.get<double>());
    case nlohmann::ordered_json::value_t::string:
      return Value::from_string(json.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      List items;
      for (const auto& element : json) items.push_back(from_json(element));
      return Value::from_list(std::move(items));
    }
    case nlohmann::ordered_json::value_t::object: {
      Dict dict;
      for (const auto& [key, element] : json.items())
        dict.entries.emplace_back(Value::from_string(key), from_json(element));
      return Value::from_dict(std::move(dict));
    }
    default:
      runtime_fail("context holds a binary or discarded JSON value, which a template cannot use");
  }
}

// json.dumps' options as transformers' tojson passes them.
struct JsonStyle {
  bool ensure_ascii = false;
  std::optional<std::string> indent;
  std::string item_separator = ", ", key_separator = ": ";
  bool sort_keys = false;
};

void write_json_string(std::string& out, const std::string& text, bool ensure_ascii) {
  out += '"';
  for (char32_t c : decode_utf8(text)) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (c < 0x20 || (ensure_ascii && c >= 0x7F)) {
          if (c >= 0x10000) {
            char32_t v = c - 0x10000;
            out += fmt::format("\\u{:04x}\\u{:04x}", uint32_t(0xD800 + (v >> 10)),
                               uint32_t(0xDC00 + (v & 0x3FF)));
          } else {
            out += fmt::format("\\u{:04x}", uint32_t(c));
          }
        } else {
          append_utf8(out, c);
        }
    }
  }
  out += '"';
}

// Python's json: a dict key becomes a string; only str, int, float, bool and None may be keys.
std::string json_key(const Value& key) {
  switch (key.kind) {
    case Value::Kind::string:
      return key.text;
    case Value::Kind::integer:
      return std::to_string(key.integer);
    case Value::Kind::floating:
      return float_repr(key.floating);
    case Value::Kind::boolean:
      return key.boolean ? "true" : "false";
    case Value::Kind::none:
      return "null";
    default:
      runtime_fail("keys must be str, int, float, bool or None, not {}", type_name(key));
  }
}

void write_json(std::string& out, const Value& v, const JsonStyle& style, int depth) {
  auto newline = [&](int level) {
    if (!style.indent) return;
    out += '\n';
    for (int i = 0; i < level; ++i) out += *style.indent;
  };
  switch (v.kind) {
    case Value::Kind::none:
      out += "null";
      return;
    case Value::Kind::boolean:
      out += v.boolean ? "true" : "false";
      return;
    case Value::Kind::integer:
      out += std::to_string(v.integer);
      return;
    case Value::Kind::floating:
      if (std::isnan(v.floating))
        out += "NaN";
      else if (std::isinf(v.floating))
        out += v.floating > 0 ? "Infinity" : "-Infinity";
      else
        out += float_repr(v.floating);
      return;
    case Value::Kind::string:
      write_json_string(out, v.text, style.ensure_ascii);
      return;
    case Value::Kind::list:
    case Value::Kind::tuple: {
      if (v.items->empty()) {
        out += "[]";
        return;
      }
      out += '[';
      for (size_t i = 0; i < v.items->size(); ++i) {
        if (i) out += style.item_separator;
        newline(depth + 1);
        write_json(out, (*v.items)[i], style, depth + 1);
      }
      newline(depth);
      out += ']';
      return;
    }
    case Value::Kind::dict: {
      if (v.dict->entries.empty()) {
        out += "{}";
        return;
      }
      std::vector<std::pair<std::string, const Value*>> entries;
      for (const auto& [key, value] : v.dict->entries) entries.emplace_back(json_key(key), &value);
      if (style.sort_keys)
        std::stable_sort(entries.begin(), entries.end(),
                         [](const auto& a, const auto& b) { return a.first < b.first; });
      out += '{';
      for (size_t i = 0; i < entries.size(); ++i) {
        if (i) out += style.item_separator;
        newline(depth + 1);
        write_json_string(out, entries[i].first, style.ensure_ascii);
        out += style.key_separator;
        write_json(out, *entries[i].second, style, depth + 1);
      }
      newline(depth);
      out += '}';
      return;
    }
    default:
      runtime_fail("Object of type {} is not JSON serializable", type_name(v));
  }
}

// ---------------------------------------------------------------------------------------------- strings

bool strip_char(char32_t c, const std::optional<std::u32string>& chars) {
  return chars ? chars->find(c) != std::u32string::npos : is_space(c);
}

// str.strip / lstrip / rstrip, with Python's default of Unicode whitespace.
std::string strip(const std::string& text, bool left, bool right,
                  const std::optional<std::string>& chars = {}) {
  std::u32string s = decode_utf8(text);
  std::optional<std::u32string> set;
  if (chars) set = decode_utf8(*chars);
  size_t begin = 0, end = s.size();
  while (left && begin < end && strip_char(s[begin], set)) ++begin;
  while (right && end > begin && strip_char(s[end - 1], set)) --end;
  return encode_utf8(std::u32string_view(s).substr(begin, end - begin));
}

// str.split(sep, maxsplit) and str.rsplit: no separator splits on runs of whitespace and drops empties.
List split(const std::string& text, const std::optional<std::string>& separator, int64_t max_split,
           bool from_right) {
  std::vector<std::string> parts;
  if (separator) {
    if (separator->empty()) runtime_fail("empty separator");
    std::string rest = text;
    if (!from_right) {
      size_t start = 0, found;
      while ((max_split < 0 || int64_t(parts.size()) < max_split) &&
             (found = text.find(*separator, start)) != std::string::npos) {
        parts.push_back(text.substr(start, found - start));
        start = found + separator->size();
      }
      parts.push_back(text.substr(start));
    } else {
      size_t end = text.size();
      std::vector<std::string> reversed;
      while ((max_split < 0 || int64_t(reversed.size()) < max_split) && end >= separator->size()) {
        size_t found = text.rfind(*separator, end - separator->size());
        if (found == std::string::npos) break;
        reversed.push_back(text.substr(found + separator->size(), end - found - separator->size()));
        end = found;
      }
      reversed.push_back(text.substr(0, end));
      parts.assign(reversed.rbegin(), reversed.rend());
    }
  } else {
    std::u32string s = decode_utf8(text);
    std::vector<std::pair<size_t, size_t>> words;  // [begin, end) in code points
    for (size_t i = 0; i < s.size();) {
      while (i < s.size() && is_space(s[i])) ++i;
      if (i == s.size()) break;
      size_t begin = i;
      while (i < s.size() && !is_space(s[i])) ++i;
      words.emplace_back(begin, i);
    }
    if (max_split >= 0 && int64_t(words.size()) > max_split + 1) {
      // The last part keeps the rest of the text, outer whitespace included (the first part for rsplit).
      if (!from_right) {
        words.resize(max_split + 1);
        words.back().second = s.size();
      } else {
        words.erase(words.begin(), words.end() - (max_split + 1));
        words.front().first = 0;
      }
    }
    for (auto [begin, end] : words)
      parts.push_back(encode_utf8(std::u32string_view(s).substr(begin, end - begin)));
  }
  List out;
  for (auto& part : parts) out.push_back(Value::from_string(std::move(part)));
  return out;
}

std::string replace(const std::string& text, const std::string& old, const std::string& replacement,
                    int64_t count) {
  std::string out;
  if (old.empty()) {  // Python inserts the replacement around every character
    std::u32string s = decode_utf8(text);
    int64_t n = 0;
    for (size_t i = 0; i <= s.size(); ++i) {
      if (count < 0 || n < count) {
        out += replacement;
        ++n;
      }
      if (i < s.size()) out += encode_utf8({&s[i], 1});
    }
    return out;
  }
  size_t start = 0, found;
  int64_t n = 0;
  while ((count < 0 || n < count) && (found = text.find(old, start)) != std::string::npos) {
    out += text.substr(start, found - start) + replacement;
    start = found + old.size();
    ++n;
  }
  return out + text.substr(start);
}

// str.center(width) with spaces, rounding as CPython does when the padding is odd.
std::string center(const std::string& text, int64_t width) {
  int64_t n = int64_t(decode_utf8(text).size());
  if (width <= n) return text;
  int64_t left = (width - n) / 2 + ((width - n) & width & 1);
  return std::string(left, ' ') + text + std::string(width - n - left, ' ');
}

// Python's str.title(): a cased character after an uncased one is upper-cased, the others lowered.
std::string python_title(const std::string& text) {
  std::u32string s = decode_utf8(text);
  bool previous_cased = false;
  for (char32_t& c : s) {
    c = previous_cased ? to_lower(c) : to_upper(c);
    previous_cased = is_cased(c);
  }
  return encode_utf8(s);
}

std::string capitalize(const std::string& text) {
  std::u32string s = decode_utf8(text);
  for (size_t i = 0; i < s.size(); ++i) s[i] = i == 0 ? to_upper(s[i]) : to_lower(s[i]);
  return encode_utf8(s);
}

// jinja2's |title: words begin after whitespace, '-', '(', '{', '[' or '<'; each word is capitalized.
std::string jinja_title(const std::string& text) {
  std::u32string s = decode_utf8(text);
  bool word_start = true;
  for (char32_t& c : s) {
    bool separator = is_space(c) || c == '-' || c == '(' || c == '{' || c == '[' || c == '<';
    if (separator) {
      word_start = true;
    } else {
      c = word_start ? to_upper(c) : to_lower(c);
      word_start = false;
    }
  }
  return encode_utf8(s);
}

// str.splitlines() without keepends.
std::vector<std::string> split_lines(const std::string& text) {
  std::u32string s = decode_utf8(text);
  std::vector<std::string> lines;
  size_t begin = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    char32_t c = s[i];
    bool is_break = c == '\n' || c == '\r' || c == 0x0B || c == 0x0C || (c >= 0x1C && c <= 0x1E) ||
                    c == 0x85 || c == 0x2028 || c == 0x2029;
    if (!is_break) continue;
    lines.push_back(encode_utf8(std::u32string_view(s).substr(begin, i - begin)));
    if (c == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ++i;
    begin = i + 1;
  }
  if (begin < s.size()) lines.push_back(encode_utf8(std::u32string_view(s).substr(begin)));
  return lines;
}

// Python slicing s[start:stop:step] over n elements: the selected indices.
std::vector<int64_t> slice_indices(int64_t n, const Value& start, const Value& stop, const Value& step) {
  auto integer = [](const Value& v, const char* what) -> std::optional<int64_t> {
    if (v.is_undefined() || v.kind == Value::Kind::none) return std::nullopt;
    if (!v.is_integral()) runtime_fail("slice {} must be an integer or None, not {}", what, type_name(v));
    return v.as_int();
  };
  int64_t by = integer(step, "step").value_or(1);
  if (by == 0) runtime_fail("slice step cannot be zero");
  auto clamp = [&](std::optional<int64_t> index, int64_t fallback) {
    if (!index) return fallback;
    int64_t i = *index < 0 ? *index + n : *index;
    if (by > 0) return std::clamp<int64_t>(i, 0, n);
    return std::clamp<int64_t>(i, -1, n - 1);
  };
  int64_t from = clamp(integer(start, "start"), by > 0 ? 0 : n - 1);
  int64_t to = clamp(integer(stop, "stop"), by > 0 ? n : -1);
  std::vector<int64_t> indices;
  for (int64_t i = from; by > 0 ? i < to : i > to; i += by) indices.push_back(i);
  return indices;
}

// ---------------------------------------------------------------------------------------------- formatting

// printf-style `format % args`: %s %r %d %i %f %F %e %g %x %o %c %% with flags, width, precision, %(key)s.
std::string percent_format(const std::string& format, const Value& args) {
  List positional = args.kind == Value::Kind::tuple ? *args.items : List{args};
  size_t next = 0;
  std::string out;
  for (size_t i = 0; i < format.size(); ++i) {
    if (format[i] != '%') {
      out += format[i];
      continue;
    }
    if (++i >= format.size()) runtime_fail("incomplete format");
    if (format[i] == '%') {
      out += '%';
      continue;
    }
    const Value* argument = nullptr;
    if (format[i] == '(') {
      size_t close = format.find(')', i);
      if (close == std::string::npos || args.kind != Value::Kind::dict)
        runtime_fail("format requires a mapping");
      argument = args.dict->find(Value::from_string(format.substr(i + 1, close - i - 1)));
      if (!argument) runtime_fail("KeyError: '{}'", format.substr(i + 1, close - i - 1));
      i = close + 1;
    }
    std::string spec = "%";
    while (i < format.size() && std::string_view("-+ #0").find(format[i]) != std::string_view::npos)
      spec += format[i++];
    while (i < format.size() && (std::isdigit(static_cast<unsigned char>(format[i])) || format[i] == '.'))
      spec += format[i++];
    if (i >= format.size()) runtime_fail("incomplete format");
    char type = format[i];
    if (!argument) {
      if (next >= positional.size()) runtime_fail("not enough arguments for format string");
      argument = &positional[next++];
    }
    char buffer[512];
    if (type == 's' || type == 'r') {
      std::string text = type == 's' ? to_str(*argument) : repr(*argument);
      std::snprintf(buffer, sizeof buffer, (spec + "s").c_str(), text.c_str());
      out += spec == "%" ? text : buffer;
    } else if (std::string_view("dixXoc").find(type) != std::string_view::npos) {
      if (!argument->is_number())
        runtime_fail("%{} format: a number is required, not {}", type, type_name(*argument));
      auto integer = static_cast<long long>(
          argument->kind == Value::Kind::floating ? std::trunc(argument->floating) : argument->as_int());
      std::snprintf(buffer, sizeof buffer, (spec + "ll" + (type == 'i' ? 'd' : type)).c_str(), integer);
      out += buffer;
    } else if (std::string_view("fFeEgG").find(type) != std::string_view::npos) {
      if (!argument->is_number()) runtime_fail("must be real number, not {}", type_name(*argument));
      std::snprintf(buffer, sizeof buffer, (spec + type).c_str(), argument->as_double());
      out += buffer;
    } else {
      runtime_fail("unsupported format character '{}'", type);
    }
  }
  if (next < positional.size() && args.kind == Value::Kind::tuple)
    runtime_fail("not all arguments converted during string formatting");
  return out;
}

// str.format with {} / {0} / {name} fields and !s / !r conversions (no format specs).
std::string brace_format(const std::string& format, const CallArgs& args) {
  std::string out;
  size_t auto_index = 0;
  for (size_t i = 0; i < format.size(); ++i) {
    char c = format[i];
    if (c == '}' && i + 1 < format.size() && format[i + 1] == '}') {
      out += '}';
      ++i;
      continue;
    }
    if (c != '{') {
      out += c;
      continue;
    }
    if (i + 1 < format.size() && format[i + 1] == '{') {
      out += '{';
      ++i;
      continue;
    }
    size_t close = format.find('}', i);
    if (close == std::string::npos) runtime_fail("Single '{' encountered in format string");
    std::string field = format.substr(i + 1, close - i - 1);
    i = close;
    char conversion = 's';
    if (size_t bang = field.find('!'); bang != std::string::npos) {
      conversion = bang + 1 < field.size() ? field[bang + 1] : 's';
      field.erase(bang);
    }
    if (field.find(':') != std::string::npos) runtime_fail("unsupported: format specs in str.format");
    const Value* value = nullptr;
    if (field.empty() || std::all_of(field.begin(), field.end(), ::isdigit)) {
      size_t index = field.empty() ? auto_index++ : std::stoul(field);
      if (index >= args.positional.size()) runtime_fail("Replacement index {} out of range", index);
      value = &args.positional[index];
    } else {
      for (const auto& [name, v] : args.keyword)
        if (name == field) value = &v;
      if (!value) runtime_fail("KeyError: '{}'", field);
    }
    out += conversion == 'r' ? repr(*value) : to_str(*value);
  }
  return out;
}

// Binds call arguments to parameter names as Python does: a missing one is undefined.
List bind_arguments(const CallArgs& args, const std::vector<std::string_view>& names, std::string_view what) {
  if (args.positional.size() > names.size())
    runtime_fail("{}() takes at most {} argument(s) ({} given)", what, names.size(), args.positional.size());
  List bound(names.size(), Value::undefined(""));
  for (size_t i = 0; i < args.positional.size(); ++i) bound[i] = args.positional[i];
  for (const auto& [name, value] : args.keyword) {
    auto found = std::find(names.begin(), names.end(), name);
    if (found == names.end()) runtime_fail("{}() got an unexpected keyword argument '{}'", what, name);
    bound[found - names.begin()] = value;
  }
  return bound;
}

const std::string& string_argument(const Value& v, std::string_view what) {
  if (!v.is_string()) runtime_fail("{}: expected a string, got {}", what, type_name(v));
  return v.text;
}

std::optional<std::string> optional_string(const Value& v, std::string_view what) {
  if (v.is_undefined() || v.kind == Value::Kind::none) return std::nullopt;
  return string_argument(v, what);
}

int64_t int_or(const Value& v, int64_t fallback, std::string_view what) {
  if (v.is_undefined() || v.kind == Value::Kind::none) return fallback;
  if (!v.is_integral()) runtime_fail("{}: expected an integer, got {}", what, type_name(v));
  return v.as_int();
}

// ---------------------------------------------------------------------------------------------- renderer

struct Scope {
  std::unordered_map<std::string, Value> variables;
  std::shared_ptr<Scope> parent;
};

// The state of one render: the scope chain, where output goes, and the line being run for messages.
class Renderer {
 public:
  Renderer(std::string output_name, std::tm now) : name(std::move(output_name)), now(now) {}

  Value lookup(const std::string& variable) const {
    for (const Scope* s = scope.get(); s; s = s->parent.get()) {
      auto found = s->variables.find(variable);
      if (found != s->variables.end()) return found->second;
    }
    return Value::undefined(fmt::format("'{}' is undefined", variable));
  }
  void assign(const std::string& variable, Value value) { scope->variables[variable] = std::move(value); }

  std::string name;
  std::tm now;
  std::shared_ptr<Scope> scope;
  std::string* out = nullptr;
  int line = 0;
  int call_depth = 0;
};

// Runs `action` in a child scope of `parent` (the current one by default), then restores the scope.
template <typename F>
auto in_scope(Renderer& renderer, std::shared_ptr<Scope> parent, F action) {
  auto saved = renderer.scope;
  renderer.scope = std::make_shared<Scope>();
  renderer.scope->parent = std::move(parent);
  struct Restore {
    Renderer& r;
    std::shared_ptr<Scope> saved;
    ~Restore() { r.scope = std::move(saved); }
  } restore{renderer, saved};
  return action();
}

// Runs `action` with output captured into a string, which it returns.
template <typename F>
std::string capture(Renderer& renderer, F action) {
  std::string captured;
  std::string* saved = renderer.out;
  renderer.out = &captured;
  struct Restore {
    Renderer& r;
    std::string* saved;
    ~Restore() { r.out = saved; }
  } restore{renderer, saved};
  action();
  return captured;
}

// ---------------------------------------------------------------------------------------------- lookups

Value bound_method(std::string name, std::function<Value(CallArgs&)> method) {
  return Value::from_callable(
      std::move(name), [method = std::move(method)](Renderer&, CallArgs& args) { return method(args); });
}

Value unsafe(const Value& object, const std::string& attribute) {
  return Value::undefined(
      fmt::format("access to attribute '{}' of '{}' object is unsafe.", attribute, type_name(object)));
}

std::optional<Value> string_method(const std::string& self, const std::string& name) {
  using Method = std::function<Value(CallArgs&)>;
  auto make = [&](Method method) { return bound_method("str." + name, std::move(method)); };
  auto stripper = [&](bool left, bool right) {
    return make([self, name, left, right](CallArgs& args) {
      auto bound = bind_arguments(args, {"chars"}, name);
      return Value::from_string(strip(self, left, right, optional_string(bound[0], name)));
    });
  };
  auto predicate = [&](std::function<bool(char32_t)> test) {
    return make([self, test](CallArgs&) {
      std::u32string s = decode_utf8(self);
      return Value::from_bool(!s.empty() && std::all_of(s.begin(), s.end(), test));
    });
  };
  if (name == "strip") return stripper(true, true);
  if (name == "lstrip") return stripper(true, false);
  if (name == "rstrip") return stripper(false, true);
  if (name == "split" || name == "rsplit") {
    return make([self, name](CallArgs& args) {
      auto bound = bind_arguments(args, {"sep", "maxsplit"}, name);
      return Value::from_list(
          split(self, optional_string(bound[0], name), int_or(bound[1], -1, name), name == "rsplit"));
    });
  }
  if (name == "splitlines") {
    return make([self](CallArgs&) {
      List lines;
      for (auto& line : split_lines(self)) lines.push_back(Value::from_string(line));
      return Value::from_list(lines);
    });
  }
  if (name == "startswith" || name == "endswith") {
    return make([self, name](CallArgs& args) {
      auto bound = bind_arguments(args, {"prefix"}, name);
      List candidates = bound[0].kind == Value::Kind::tuple ? *bound[0].items : List{bound[0]};
      for (const Value& candidate : candidates) {
        const std::string& affix = string_argument(candidate, name);
        bool match =
            affix.size() <= self.size() &&
            (name == "startswith" ? self.compare(0, affix.size(), affix) == 0
                                  : self.compare(self.size() - affix.size(), affix.size(), affix) == 0);
        if (match) return Value::from_bool(true);
      }
      return Value::from_bool(false);
    });
  }
  if (name == "upper") return make([self](CallArgs&) { return Value::from_string(upper(self)); });
  if (name == "lower")
    return make([self](CallArgs&) { return Value::from_string(map_chars(self, to_lower)); });
  if (name == "title") return make([self](CallArgs&) { return Value::from_string(python_title(self)); });
  if (name == "capitalize") return make([self](CallArgs&) { return Value::from_string(capitalize(self)); });
  if (name == "swapcase") {
    return make([self](CallArgs&) {
      return Value::from_string(
          map_chars(self, [](char32_t c) { return is_upper_char(c) ? to_lower(c) : to_upper(c); }));
    });
  }
  if (name == "replace") {
    return make([self](CallArgs& args) {
      auto bound = bind_arguments(args, {"old", "new", "count"}, "replace");
      return Value::from_string(replace(self, string_argument(bound[0], "replace"),
                                        string_argument(bound[1], "replace"),
                                        int_or(bound[2], -1, "replace")));
    });
  }
  if (name == "center") {
    return make([self](CallArgs& args) {
      return Value::from_string(
          center(self, int_or(bind_arguments(args, {"width"}, "center")[0], 0, "center")));
    });
  }
  if (name == "format")
    return make([self](CallArgs& args) { return Value::from_string(brace_format(self, args)); });
  if (name == "join") {
    return make([self](CallArgs& args) {
      auto bound = bind_arguments(args, {"iterable"}, "join");
      std::string out;
      List parts = iterate(bound[0]);
      for (size_t i = 0; i < parts.size(); ++i) out += (i ? self : "") + string_argument(parts[i], "join");
      return Value::from_string(out);
    });
  }
  if (name == "find" || name == "rfind" || name == "index" || name == "count") {
    return make([self, name](CallArgs& args) {
      auto bound = bind_arguments(args, {"sub"}, name);
      const std::string& sub = string_argument(bound[0], name);
      auto code_points = [&](size_t bytes) {
        return int64_t(decode_utf8(std::string_view(self).substr(0, bytes)).size());
      };
      if (name == "count") {
        if (sub.empty()) return Value::from_int(length(Value::from_string(self)) + 1);
        int64_t n = 0;
        for (size_t at = self.find(sub); at != std::string::npos; at = self.find(sub, at + sub.size())) ++n;
        return Value::from_int(n);
      }
      size_t at = name == "rfind" ? self.rfind(sub) : self.find(sub);
      if (at == std::string::npos && name == "index") runtime_fail("substring not found");
      return Value::from_int(at == std::string::npos ? -1 : code_points(at));
    });
  }
  if (name == "removeprefix" || name == "removesuffix") {
    return make([self, name](CallArgs& args) {
      std::string affix = string_argument(bind_arguments(args, {"affix"}, name)[0], name);
      if (name == "removeprefix" && self.compare(0, affix.size(), affix) == 0)
        return Value::from_string(self.substr(affix.size()));
      if (name == "removesuffix" && affix.size() <= self.size() && !affix.empty() &&
          self.compare(self.size() - affix.size(), affix.size(), affix) == 0)
        return Value::from_string(self.substr(0, self.size() - affix.size()));
      return Value::from_string(self);
    });
  }
  if (name == "isdigit") return predicate([](char32_t c) { return c >= '0' && c <= '9'; });
  if (name == "isalpha")
    return predicate(
        [](char32_t c) { return is_cased(c) || (c >= 0x80 && !is_space(c) && !is_unprintable(c)); });
  if (name == "isalnum")
    return predicate(
        [](char32_t c) { return (c >= '0' && c <= '9') || is_cased(c) || (c >= 0x80 && !is_space(c)); });
  if (name == "isspace") return predicate(is_space);
  if (name == "isupper" || name == "islower") {
    return make([self, name](CallArgs&) {
      std::u32string s = decode_utf8(self);
      bool any_cased = false, all_match = true;
      for (char32_t c : s) {
        if (!is_cased(c)) continue;
        any_cased = true;
        all_match = all_match && (name == "isupper" ? is_upper_char(c) : is_lower_char(c));
      }
      return Value::from_bool(any_cased && all_match);
    });
  }
  return std::nullopt;
}

std::optional<Value> dict_method(const Value& self, const std::string& name) {
  auto dict = self.dict;
  if (name == "items" || name == "keys" || name == "values") {
    return bound_method("dict." + name, [dict, name](CallArgs&) {
      List out;
      for (const auto& [k, v] : dict->entries)
        out.push_back(name == "items" ? Value::from_list({k, v}, true) : name == "keys" ? k : v);
      return Value::from_list(out);
    });
  }
  if (name == "get") {
    return bound_method("dict.get", [dict](CallArgs& args) {
      auto bound = bind_arguments(args, {"key", "default"}, "get");
      const Value* found = dict->find(bound[0]);
      return found ? *found : bound[1].is_undefined() ? Value::none() : bound[1];
    });
  }
  static const std::unordered_set<std::string> mutators = {"clear", "pop", "popitem", "setdefault", "update"};
  if (mutators.count(name)) return unsafe(self, name);
  return std::nullopt;
}

std::optional<Value> list_method(const Value& self, const std::string& name) {
  auto items = self.items;
  if (name == "count" || name == "index") {
    return bound_method(type_name(self) + "." + name, [items, name](CallArgs& args) {
      Value needle = bind_arguments(args, {"value"}, name)[0];
      int64_t n = 0;
      for (size_t i = 0; i < items->size(); ++i) {
        if (!equal((*items)[i], needle)) continue;
        if (name == "index") return Value::from_int(int64_t(i));
        ++n;
      }
      if (name == "index") runtime_fail("{} is not in list", repr(needle));
      return Value::from_int(n);
    });
  }
  static const std::unordered_set<std::string> mutators = {"append", "clear",  "extend",  "insert",
                                                           "pop",    "remove", "reverse", "sort"};
  if (mutators.count(name)) return unsafe(self, name);
  return std::nullopt;
}

// A Python attribute of the value (a method, a namespace or loop attribute), if it has one.
std::optional<Value> python_attribute(const Value& object, const std::string& name) {
  switch (object.kind) {
    case Value::Kind::string:
      return string_method(object.text, name);
    case Value::Kind::dict:
      return dict_method(object, name);
    case Value::Kind::list:
    case Value::Kind::tuple:
      return list_method(object, name);
    case Value::Kind::object:
      if (const Value* found = object.object->find(name)) return *found;
      return std::nullopt;
    default:
      return std::nullopt;
  }
}

std::optional<Value> python_item(const Value& object, const Value& key) {
  if (object.kind == Value::Kind::dict) {
    if (const Value* found = object.dict->find(key)) return *found;
  } else if ((object.is_sequence() || object.is_string()) && key.is_integral()) {
    int64_t n = length(object), index = key.as_int() < 0 ? key.as_int() + n : key.as_int();
    if (index < 0 || index >= n) return std::nullopt;
    if (object.is_sequence()) return (*object.items)[index];
    std::u32string s = decode_utf8(object.text);
    return Value::from_string(encode_utf8({&s[index], 1}));
  }
  return std::nullopt;
}

// `object.name`: the Python attribute first, then the item (jinja2's environment.getattr).
Value get_attribute(const Value& object, const std::string& name) {
  if (object.is_undefined()) fail_undefined(object);
  if (auto attribute = python_attribute(object, name)) return *attribute;
  if (auto item = python_item(object, Value::from_string(name))) return *item;
  return Value::undefined(fmt::format("'{}' has no attribute '{}'", object_type_repr(object), name));
}

// `object[key]`: the item first, then for a string key the attribute (jinja2's environment.getitem).
Value get_item(const Value& object, const Value& key) {
  if (object.is_undefined()) fail_undefined(object);
  if (auto item = python_item(object, key)) return *item;
  if (key.is_string()) {
    if (auto attribute = python_attribute(object, key.text)) return *attribute;
    return Value::undefined(fmt::format("'{}' has no attribute '{}'", object_type_repr(object), key.text));
  }
  return Value::undefined(fmt::format("'{}' has no element {}", object_type_repr(object), repr(key)));
}

// jinja2's attribute paths in map/selectattr/sort: "a.b.0" looks up a, then b, then item 0.
Value get_attribute_path(const Value& object, const std::string& path) {
  Value current = object;
  size_t start = 0;
  while (true) {
    size_t dot = path.find('.', start);
    std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    bool numeric = !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit);
    current = get_item(current, numeric ? Value::from_int(std::stoll(part)) : Value::from_string(part));
    if (dot == std::string::npos) return current;
    start = dot + 1;
  }
}

Value call(Renderer& renderer, const Value& callee, CallArgs& args) {
  if (callee.is_undefined()) fail_undefined(callee);
  if (callee.kind != Value::Kind::callable) runtime_fail("'{}' object is not callable", type_name(callee));
  return callee.callable->invoke(renderer, args);
}

// ---------------------------------------------------------------------------------------------- filters and
// tests

using FilterFunction = std::function<Value(Renderer&, const Value&, CallArgs&)>;
using TestFunction = std::function<bool(Renderer&, const Value&, CallArgs&)>;

const std::unordered_map<std::string, FilterFunction>& filters();
const std::unordered_map<std::string, TestFunction>& tests();

// jinja2's built-in filters this interpreter leaves out: named as unsupported rather than unknown.
const std::unordered_set<std::string> kUnsupportedFilters = {
    "filesizeformat", "forceescape", "groupby",   "pprint", "random",   "slice",
    "striptags",      "truncate",    "urlencode", "urlize", "wordwrap", "xmlattr"};

Value apply_filter(Renderer& renderer, const std::string& name, const Value& input, CallArgs& args) {
  auto found = filters().find(name);
  if (found == filters().end()) runtime_fail("no filter named '{}'", name);
  return found->second(renderer, input, args);
}

bool apply_test(Renderer& renderer, const std::string& name, const Value& input, CallArgs& args) {
  auto found = tests().find(name);
  if (found == tests().end()) runtime_fail("no test named '{}'", name);
  return found->second(renderer, input, args);
}

CallArgs rest_of(const CallArgs& args, size_t skip) {
  CallArgs rest;
  rest.positional.assign(args.positional.begin() + std::min(skip, args.positional.size()),
                         args.positional.end());
  rest.keyword = args.keyword;
  return rest;
}

// select / reject / selectattr / rejectattr: keep the items whose (attribute's) test is `keep`.
Value select_items(Renderer& renderer, const Value& input, CallArgs& args, bool by_attribute, bool keep) {
  size_t first_test_arg = by_attribute ? 1 : 0;
  std::string attribute;
  if (by_attribute) {
    if (args.positional.empty()) runtime_fail("selectattr/rejectattr need an attribute");
    attribute = string_argument(args.positional[0], "selectattr");
  }
  std::optional<std::string> test_name;
  if (args.positional.size() > first_test_arg)
    test_name = string_argument(args.positional[first_test_arg], "select");
  CallArgs test_args = rest_of(args, first_test_arg + 1);
  List kept;
  for (const Value& item : iterate(input)) {
    Value subject = by_attribute ? get_attribute_path(item, attribute) : item;
    bool passes = test_name ? apply_test(renderer, *test_name, subject, test_args) : truthy(subject);
    if (passes == keep) kept.push_back(item);
  }
  return Value::from_list(kept);
}

// The sort key of jinja2's sort/dictsort/unique/min/max: lower-cased strings unless case_sensitive.
Value sort_key(const Value& v, bool case_sensitive) {
  return v.is_string() && !case_sensitive ? Value::from_string(map_chars(v.text, to_lower)) : v;
}

Value filter_map(Renderer& renderer, const Value& input, CallArgs& args) {
  List out;
  for (const auto& [name, value] : args.keyword) {
    if (name != "attribute" && name != "default")
      runtime_fail("map() got an unexpected keyword argument '{}'", name);
  }
  auto keyword = [&](const std::string& name) -> const Value* {
    for (const auto& [k, v] : args.keyword)
      if (k == name) return &v;
    return nullptr;
  };
  if (const Value* attribute = keyword("attribute")) {
    const Value* fallback = keyword("default");
    for (const Value& item : iterate(input)) {
      Value mapped = get_attribute_path(item, to_str(*attribute));
      out.push_back(mapped.is_undefined() && fallback ? *fallback : mapped);
    }
    return Value::from_list(out);
  }
  if (args.positional.empty()) runtime_fail("map requires a filter argument");
  std::string filter_name = string_argument(args.positional[0], "map");
  CallArgs filter_args = rest_of(args, 1);
  for (const Value& item : iterate(input))
    out.push_back(apply_filter(renderer, filter_name, item, filter_args));
  return Value::from_list(out);
}

Value filter_tojson(const Value& input, CallArgs& args) {
  auto bound = bind_arguments(args, {"ensure_ascii", "indent", "separators", "sort_keys"}, "tojson");
  JsonStyle style;
  style.ensure_ascii = truthy(bound[0]);
  if (bound[1].is_integral())
    style.indent = std::string(std::max<int64_t>(0, bound[1].as_int()), ' ');
  else if (bound[1].is_string())
    style.indent = bound[1].text;
  else if (!bound[1].is_undefined() && bound[1].kind != Value::Kind::none)
    runtime_fail("tojson: indent must be an int or a string");
  if (style.indent) style.item_separator = ",";
  if (bound[2].is_sequence() && bound[2].items->size() == 2) {
    style.item_separator = string_argument((*bound[2].items)[0], "tojson separators");
    style.key_separator = string_argument((*bound[2].items)[1], "tojson separators");
  }
  style.sort_keys = truthy(bound[3]);
  std::string out;
  write_json(out, input, style, 0);
  return Value::from_string(out);
}

Value filter_indent(const Value& input, CallArgs& args) {
  auto bound = bind_arguments(args, {"width", "first", "blank"}, "indent");
  std::string indentation = bound[0].is_string()
                                ? bound[0].text
                                : std::string(std::max<int64_t>(0, int_or(bound[0], 4, "indent")), ' ');
  // jinja2 appends a newline before splitlines() so that a trailing newline survives.
  std::vector<std::string> lines = split_lines(to_str(input) + "\n");
  std::string out;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (i == 0) {
      out = lines[0];
      continue;
    }
    out += "\n";
    if (truthy(bound[2]) || !lines[i].empty()) out += indentation;
    out += lines[i];
  }
  if (truthy(bound[1])) out = indentation + out;
  return Value::from_string(out);
}

Value filter_int(const Value& input, CallArgs& args) {
  auto bound = bind_arguments(args, {"default", "base"}, "int");
  Value fallback = bound[0].is_undefined() ? Value::from_int(0) : bound[0];
  if (input.is_integral()) return Value::from_int(input.as_int());
  if (input.kind == Value::Kind::floating)
    return std::isfinite(input.floating) ? Value::from_int(int64_t(input.floating)) : fallback;
  if (!input.is_string()) return fallback;
  std::string text = strip(input.text, true, true);
  int base = static_cast<int>(int_or(bound[1], 10, "int"));
  char* end = nullptr;
  errno = 0;
  long long parsed = std::strtoll(text.c_str(), &end, base);
  if (!text.empty() && *end == '\0' && errno == 0) return Value::from_int(parsed);
  double as_float = std::strtod(text.c_str(), &end);  // jinja2 retries through float("4.5")
  if (!text.empty() && *end == '\0' && std::isfinite(as_float)) return Value::from_int(int64_t(as_float));
  return fallback;
}

Value filter_float(const Value& input, CallArgs& args) {
  auto bound = bind_arguments(args, {"default"}, "float");
  Value fallback = bound[0].is_undefined() ? Value::from_double(0.0) : bound[0];
  if (input.is_number()) return Value::from_double(input.as_double());
  if (!input.is_string()) return fallback;
  std::string text = strip(input.text, true, true);
  char* end = nullptr;
  double parsed = std::strtod(text.c_str(), &end);
  return !text.empty() && *end == '\0' ? Value::from_double(parsed) : fallback;
}

Value filter_round(const Value& input, CallArgs& args) {
  auto bound = bind_arguments(args, {"precision", "method"}, "round");
  int64_t precision = int_or(bound[0], 0, "round");
  std::string method = bound[1].is_undefined() ? "common" : string_argument(bound[1], "round");
  if (!input.is_number()) runtime_fail("round: expected a number, got {}", type_name(input));
  if (input.is_integral() && method == "common") return Value::from_int(input.as_int());
  double scale = std::pow(10.0, double(precision)), x = input.as_double();
  if (method == "floor") return Value::from_double(std::floor(x * scale) / scale);
  if (method == "ceil") return Value::from_double(std::ceil(x * scale) / scale);
  if (method != "common") runtime_fail("method must be 'common', 'ceil' or 'floor'");
  // Python's round(): correctly rounded from the exact binary value, ties to even, as printf does.
  char buffer[400];
  std::snprintf(buffer, sizeof buffer, "%.*f", int(std::clamp<int64_t>(precision, 0, 300)), x);
  return Value::from_double(std::strtod(buffer, nullptr));
}

Value filter_sort(const Value& input, CallArgs& args) {
  auto bound = bind_arguments(args, {"reverse", "case_sensitive", "attribute"}, "sort");
  bool reverse = truthy(bound[0]), case_sensitive = truthy(bound[1]);
  std::optional<std::string> attribute = optional_string(bound[2], "sort");
  List items = iterate(input);
  auto key = [&](const Value& v) {
    return sort_key(attribute ? get_attribute_path(v, *attribute) : v, case_sensitive);
  };
  std::stable_sort(items.begin(), items.end(), [&](const Value& a, const Value& b) {
    return reverse ? compare(key(b), key(a), "<") < 0 : compare(key(a), key(b), "<") < 0;
  });
  return Value::from_list(items);
}

Value filter_dictsort(const Value& input, CallArgs& args) {
  auto bound = bind_arguments(args, {"case_sensitive", "by", "reverse"}, "dictsort");
  if (input.kind != Value::Kind::dict) runtime_fail("dictsort: expected a dict, got {}", type_name(input));
  bool case_sensitive = truthy(bound[0]), reverse = truthy(bound[2]);
  std::string by = bound[1].is_undefined() ? "key" : string_argument(bound[1], "dictsort");
  if (by != "key" && by != "value") runtime_fail("You can only sort by either \"key\" or \"value\"");
  List pairs;
  for (const auto& [k, v] : input.dict->entries) pairs.push_back(Value::from_list({k, v}, true));
  size_t index = by == "key" ? 0 : 1;
  std::stable_sort(pairs.begin(), pairs.end(), [&](const Value& a, const Value& b) {
    Value ka = sort_key((*a.items)[index], case_sensitive), kb = sort_key((*b.items)[index], case_sensitive);
    return reverse ? compare(kb, ka, "<") < 0 : compare(ka, kb, "<") < 0;
  });
  return Value::from_list(pairs);
}

Value filter_min_max(const Value& input, CallArgs& args, bool want_max) {
  auto bound = bind_arguments(args, {"case_sensitive", "attribute"}, want_max ? "max" : "min");
  bool case_sensitive = truthy(bound[0]);
  std::optional<std::string> attribute = optional_string(bound[1], "min/max");
  List items = iterate(input);
  if (items.empty()) return Value::undefined(fmt::format("No aggregated item, sequence was empty."));
  auto key = [&](const Value& v) {
    return sort_key(attribute ? get_attribute_path(v, *attribute) : v, case_sensitive);
  };
  const Value* best = &items[0];
  for (const Value& item : items) {
    int order = compare(key(item), key(*best), want_max ? ">" : "<");
    if (want_max ? order > 0 : order < 0) best = &item;
  }
  return *best;
}

Value filter_unique(const Value& input, CallArgs& args) {
  auto bound = bind_arguments(args, {"case_sensitive", "attribute"}, "unique");
  bool case_sensitive = truthy(bound[0]);
  std::optional<std::string> attribute = optional_string(bound[1], "unique");
  List kept, seen;
  for (const Value& item : iterate(input)) {
    Value key = sort_key(attribute ? get_attribute_path(item, *attribute) : item, case_sensitive);
    if (std::any_of(seen.begin(), seen.end(), [&](const Value& s) { return equal(s, key); })) continue;
    seen.push_back(key);
    kept.push_back(item);
  }
  return Value::from_list(kept);
}

Value filter_join(const Value& input, CallArgs& args) {
  auto bound = bind_arguments(args, {"d", "attribute"}, "join");
  std::string separator = bound[0].is_undefined() ? "" : to_str(bound[0]);
  std::optional<std::string> attribute;
  if (!bound[1].is_undefined()) attribute = to_str(bound[1]);
  std::string out;
  List items = iterate(input);
  for (size_t i = 0; i < items.size(); ++i)
    out += (i ? separator : "") + to_str(attribute ? get_attribute_path(items[i], *attribute) : items[i]);
  return Value::from_string(out);
}

Value filter_sum(const Value& input, CallArgs& args) {
  auto bound = bind_arguments(args, {"attribute", "start"}, "sum");
  std::optional<std::string> attribute = optional_string(bound[0], "sum");
  Value total = bound[1].is_undefined() ? Value::from_int(0) : bound[1];
  for (const Value& item : iterate(input))
    total = arithmetic("+", total, attribute ? get_attribute_path(item, *attribute) : item);
  return total;
}

Value filter_batch(const Value& input, CallArgs& args) {
  auto bound = bind_arguments(args, {"linecount", "fill_with"}, "batch");
  int64_t size = int_or(bound[0], 1, "batch");
  if (size <= 0) runtime_fail("batch: linecount must be positive");
  List batches, current;
  for (const Value& item : iterate(input)) {
    current.push_back(item);
    if (int64_t(current.size()) == size) batches.push_back(Value::from_list(std::exchange(current, {})));
  }
  if (!current.empty()) {
    if (!bound[1].is_undefined() && bound[1].kind != Value::Kind::none)
      while (int64_t(current.size()) < size) current.push_back(bound[1]);
    batches.push_back(Value::from_list(current));
  }
  return Value::from_list(batches);
}

std::string html_escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&#34;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

Value string_filter(const Value& input, std::string (*transform)(const std::string&)) {
  return Value::from_string(transform(to_str(input)));
}

const std::unordered_map<std::string, FilterFunction>& filters() {
  static const std::unordered_map<std::string, FilterFunction> table = [] {
    std::unordered_map<std::string, FilterFunction> t;
    t["abs"] = [](Renderer&, const Value& v, CallArgs&) {
      if (v.is_integral()) return Value::from_int(std::llabs(v.as_int()));
      if (v.kind == Value::Kind::floating) return Value::from_double(std::fabs(v.floating));
      runtime_fail("bad operand type for abs(): '{}'", type_name(v));
    };
    t["attr"] = [](Renderer&, const Value& v, CallArgs& args) {
      return get_attribute(v, string_argument(bind_arguments(args, {"name"}, "attr")[0], "attr"));
    };
    t["batch"] = [](Renderer&, const Value& v, CallArgs& args) { return filter_batch(v, args); };
    t["capitalize"] = [](Renderer&, const Value& v, CallArgs&) { return string_filter(v, capitalize); };
    t["center"] = [](Renderer&, const Value& v, CallArgs& args) {
      int64_t width = int_or(bind_arguments(args, {"width"}, "center")[0], 80, "center");
      return Value::from_string(center(to_str(v), width));
    };
    t["count"] =
        t["length"] = [](Renderer&, const Value& v, CallArgs&) { return Value::from_int(length(v)); };
    t["default"] = t["d"] = [](Renderer&, const Value& v, CallArgs& args) {
      auto bound = bind_arguments(args, {"default_value", "boolean"}, "default");
      Value fallback = bound[0].is_undefined() ? Value::from_string("") : bound[0];
      bool use_fallback = v.is_undefined() || (truthy(bound[1]) && !truthy(v));
      return use_fallback ? fallback : v;
    };
    t["dictsort"] = [](Renderer&, const Value& v, CallArgs& args) { return filter_dictsort(v, args); };
    t["escape"] = t["e"] = [](Renderer&, const Value& v, CallArgs&) { return string_filter(v, html_escape); };
    t["first"] = [](Renderer&, const Value& v, CallArgs&) {
      List items = iterate(v);
      return items.empty() ? Value::undefined("No first item, sequence was empty.") : items.front();
    };
    t["last"] = [](Renderer&, const Value& v, CallArgs&) {
      if (v.kind == Value::Kind::dict) runtime_fail("'dict' object is not reversible");
      List items = iterate(v);
      return items.empty() ? Value::undefined("No last item, sequence was empty.") : items.back();
    };
    t["float"] = [](Renderer&, const Value& v, CallArgs& args) { return filter_float(v, args); };
    t["format"] = [](Renderer&, const Value& v, CallArgs& args) {
      if (!args.keyword.empty() && !args.positional.empty())
        runtime_fail("can't handle positional and keyword arguments at the same time");
      if (!args.keyword.empty()) {
        Dict mapping;
        for (const auto& [k, value] : args.keyword) mapping.set(Value::from_string(k), value);
        return Value::from_string(percent_format(to_str(v), Value::from_dict(mapping)));
      }
      return Value::from_string(percent_format(to_str(v), Value::from_list(args.positional, true)));
    };
    t["indent"] = [](Renderer&, const Value& v, CallArgs& args) { return filter_indent(v, args); };
    t["int"] = [](Renderer&, const Value& v, CallArgs& args) { return filter_int(v, args); };
    t["items"] = [](Renderer&, const Value& v, CallArgs&) {
      if (v.is_undefined()) return Value::from_list({});
      if (v.kind != Value::Kind::dict) runtime_fail("Can only get item pairs from a mapping.");
      List pairs;
      for (const auto& [k, value] : v.dict->entries) pairs.push_back(Value::from_list({k, value}, true));
      return Value::from_list(pairs);
    };
    t["join"] = [](Renderer&, const Value& v, CallArgs& args) { return filter_join(v, args); };
    t["list"] = [](Renderer&, const Value& v, CallArgs&) { return Value::from_list(iterate(v)); };
    t["lower"] = [](Renderer&, const Value& v, CallArgs&) {
      return Value::from_string(map_chars(to_str(v), to_lower));
    };
    t["map"] = [](Renderer& r, const Value& v, CallArgs& args) { return filter_map(r, v, args); };
    t["max"] = [](Renderer&, const Value& v, CallArgs& args) { return filter_min_max(v, args, true); };
    t["min"] = [](Renderer&, const Value& v, CallArgs& args) { return filter_min_max(v, args, false); };
    t["reject"] = [](Renderer& r, const Value& v, CallArgs& args) {
      return select_items(r, v, args, false, false);
    };
    t["rejectattr"] = [](Renderer& r, const Value& v, CallArgs& args) {
      return select_items(r, v, args, true, false);
    };
    t["replace"] = [](Renderer&, const Value& v, CallArgs& args) {
      auto bound = bind_arguments(args, {"old", "new", "count"}, "replace");
      return Value::from_string(
          replace(to_str(v), to_str(bound[0]), to_str(bound[1]), int_or(bound[2], -1, "replace")));
    };
    t["reverse"] = [](Renderer&, const Value& v, CallArgs&) {
      if (v.is_string()) {
        std::u32string s = decode_utf8(v.text);
        return Value::from_string(encode_utf8(std::u32string(s.rbegin(), s.rend())));
      }
      List items = iterate(v);
      return Value::from_list(List(items.rbegin(), items.rend()));
    };
    t["round"] = [](Renderer&, const Value& v, CallArgs& args) { return filter_round(v, args); };
    t["safe"] = [](Renderer&, const Value& v, CallArgs&) { return v; };
    t["select"] = [](Renderer& r, const Value& v, CallArgs& args) {
      return select_items(r, v, args, false, true);
    };
    t["selectattr"] = [](Renderer& r, const Value& v, CallArgs& args) {
      return select_items(r, v, args, true, true);
    };
    t["sort"] = [](Renderer&, const Value& v, CallArgs& args) { return filter_sort(v, args); };
    t["string"] = [](Renderer&, const Value& v, CallArgs&) { return Value::from_string(to_str(v)); };
    t["sum"] = [](Renderer&, const Value& v, CallArgs& args) { return filter_sum(v, args); };
    t["title"] = [](Renderer&, const Value& v, CallArgs&) { return string_filter(v, jinja_title); };
    t["tojson"] = [](Renderer&, const Value& v, CallArgs& args) { return filter_tojson(v, args); };
    t["trim"] = [](Renderer&, const Value& v, CallArgs& args) {
      return Value::from_string(
          strip(to_str(v), true, true, optional_string(bind_arguments(args, {"chars"}, "trim")[0], "trim")));
    };
    t["unique"] = [](Renderer&, const Value& v, CallArgs& args) { return filter_unique(v, args); };
    t["upper"] = [](Renderer&, const Value& v, CallArgs&) { return Value::from_string(upper(to_str(v))); };
    t["wordcount"] = [](Renderer&, const Value& v, CallArgs&) {
      // re.findall(r"\w+"): runs of letters, digits and underscores.
      int64_t words = 0;
      bool in_word = false;
      for (char32_t c : decode_utf8(to_str(v))) {
        bool word_char = c == '_' || (c >= '0' && c <= '9') || is_cased(c) ||
                         (c >= 0x80 && !is_space(c) && !is_unprintable(c));
        if (word_char && !in_word) ++words;
        in_word = word_char;
      }
      return Value::from_int(words);
    };
    return t;
  }();
  return table;
}

bool test_compare(const Value& v, CallArgs& args, std::string_view op) {
  Value other = bind_arguments(args, {"other"}, op)[0];
  if (op == "==") return equal(v, other);
  if (op == "!=") return !equal(v, other);
  int order = compare(v, other, op);
  return op == "<" ? order < 0 : op == "<=" ? order <= 0 : op == ">" ? order > 0 : order >= 0;
}

const std::unordered_map<std::string, TestFunction>& tests() {
  static const std::unordered_map<std::string, TestFunction> table = [] {
    std::unordered_map<std::string, TestFunction> t;
    auto kind_test = [](std::function<bool(const Value&)> predicate) {
      return [predicate](Renderer&, const Value& v, CallArgs&) { return predicate(v); };
    };
    t["boolean"] = kind_test([](const Value& v) { return v.kind == Value::Kind::boolean; });
    t["callable"] = kind_test([](const Value& v) { return v.kind == Value::Kind::callable; });
    t["defined"] = kind_test([](const Value& v) { return !v.is_undefined(); });
    t["undefined"] = kind_test([](const Value& v) { return v.is_undefined(); });
    t["none"] = kind_test([](const Value& v) { return v.kind == Value::Kind::none; });
    t["true"] = kind_test([](const Value& v) { return v.kind == Value::Kind::boolean && v.boolean; });
    t["false"] = kind_test([](const Value& v) { return v.kind == Value::Kind::boolean && !v.boolean; });
    t["integer"] = kind_test([](const Value& v) { return v.kind == Value::Kind::integer; });
    t["float"] = kind_test([](const Value& v) { return v.kind == Value::Kind::floating; });
    t["number"] = kind_test([](const Value& v) { return v.is_number(); });
    t["string"] = kind_test([](const Value& v) { return v.is_string(); });
    t["mapping"] = kind_test([](const Value& v) { return v.kind == Value::Kind::dict; });
    // Undefined is iterable (as empty) and a sequence (it has __len__ and __getitem__) in jinja2.
    t["iterable"] = kind_test([](const Value& v) {
      return v.is_undefined() || v.is_string() || v.is_sequence() || v.kind == Value::Kind::dict;
    });
    t["sequence"] = t["iterable"];
    t["escaped"] = kind_test([](const Value&) { return false; });
    t["lower"] =
        kind_test([](const Value& v) { return v.is_string() && map_chars(v.text, to_lower) == v.text; });
    t["upper"] =
        kind_test([](const Value& v) { return v.is_string() && map_chars(v.text, to_upper) == v.text; });
    auto integer_of = [](const Value& v, std::string_view test) {
      if (!v.is_integral()) runtime_fail("the '{}' test needs an integer, got {}", test, type_name(v));
      return v.as_int();
    };
    t["odd"] = [integer_of](Renderer&, const Value& v, CallArgs&) {
      return floor_mod(integer_of(v, "odd"), 2) == 1;
    };
    t["even"] = [integer_of](Renderer&, const Value& v, CallArgs&) {
      return floor_mod(integer_of(v, "even"), 2) == 0;
    };
    t["divisibleby"] = [integer_of](Renderer&, const Value& v, CallArgs& args) {
      Value divisor = bind_arguments(args, {"num"}, "divisibleby")[0];
      int64_t by = int_or(divisor, 1, "divisibleby");
      if (by == 0) runtime_fail("integer division or modulo by zero");
      return floor_mod(integer_of(v, "divisibleby"), by) == 0;
    };
    t["eq"] = t["equalto"] =
        t["=="] = [](Renderer&, const Value& v, CallArgs& a) { return test_compare(v, a, "=="); };
    t["ne"] = t["!="] = [](Renderer&, const Value& v, CallArgs& a) { return test_compare(v, a, "!="); };
    t["lt"] = t["lessthan"] =
        t["<"] = [](Renderer&, const Value& v, CallArgs& a) { return test_compare(v, a, "<"); };
    t["le"] = t["<="] = [](Renderer&, const Value& v, CallArgs& a) { return test_compare(v, a, "<="); };
    t["gt"] = t["greaterthan"] =
        t[">"] = [](Renderer&, const Value& v, CallArgs& a) { return test_compare(v, a, ">"); };
    t["ge"] = t[">="] = [](Renderer&, const Value& v, CallArgs& a) { return test_compare(v, a, ">="); };
    t["in"] = [](Renderer&, const Value& v, CallArgs& args) {
      return contains(bind_arguments(args, {"seq"}, "in")[0], v);
    };
    t["sameas"] = [](Renderer&, const Value& v, CallArgs& args) {
      Value other = bind_arguments(args, {"other"}, "sameas")[0];
      if (v.kind != other.kind) return false;
      if (v.is_sequence()) return v.items == other.items;
      if (v.kind == Value::Kind::dict) return v.dict == other.dict;
      return equal(v, other);
    };
    t["filter"] = [](Renderer&, const Value& v, CallArgs&) {
      return v.is_string() && filters().count(v.text) > 0;
    };
    t["test"] = [](Renderer&, const Value& v, CallArgs&) {
      return v.is_string() && tests().count(v.text) > 0;
    };
    return t;
  }();
  return table;
}

// ---------------------------------------------------------------------------------------------- AST

struct Expr {
  explicit Expr(int line) : line(line) {}
  virtual ~Expr() = default;
  // Sets renderer.line first, so that a failure inside reports this expression's line.
  Value evaluate(Renderer& renderer) const {
    renderer.line = line;
    return eval(renderer);
  }
  int line;

 private:
  virtual Value eval(Renderer& renderer) const = 0;
};
using ExprPtr = std::unique_ptr<Expr>;

struct Arguments {
  std::vector<ExprPtr> positional;
  std::vector<std::pair<std::string, ExprPtr>> keyword;

  CallArgs evaluate(Renderer& renderer) const {
    CallArgs args;
    for (const auto& e : positional) args.positional.push_back(e->evaluate(renderer));
    for (const auto& [name, e] : keyword) args.keyword.emplace_back(name, e->evaluate(renderer));
    return args;
  }
};

struct Literal : Expr {
  Literal(int line, Value value) : Expr(line), value(std::move(value)) {}
  Value eval(Renderer&) const override { return value; }
  Value value;
};

struct Name : Expr {
  Name(int line, std::string name) : Expr(line), name(std::move(name)) {}
  Value eval(Renderer& renderer) const override { return renderer.lookup(name); }
  std::string name;
};

struct ListExpr : Expr {
  ListExpr(int line, std::vector<ExprPtr> items, bool tuple)
      : Expr(line), items(std::move(items)), tuple(tuple) {}
  Value eval(Renderer& renderer) const override {
    List values;
    for (const auto& item : items) values.push_back(item->evaluate(renderer));
    return Value::from_list(std::move(values), tuple);
  }
  std::vector<ExprPtr> items;
  bool tuple;
};

struct DictExpr : Expr {
  using Expr::Expr;
  Value eval(Renderer& renderer) const override {
    Dict dict;
    for (const auto& [key, value] : entries) dict.set(key->evaluate(renderer), value->evaluate(renderer));
    return Value::from_dict(std::move(dict));
  }
  std::vector<std::pair<ExprPtr, ExprPtr>> entries;
};

struct GetAttr : Expr {
  GetAttr(int line, ExprPtr object, std::string attribute)
      : Expr(line), object(std::move(object)), attribute(std::move(attribute)) {}
  Value eval(Renderer& renderer) const override {
    Value target = object->evaluate(renderer);
    renderer.line = line;
    return get_attribute(target, attribute);
  }
  ExprPtr object;
  std::string attribute;
};

struct GetItem : Expr {
  GetItem(int line, ExprPtr object, ExprPtr key)
      : Expr(line), object(std::move(object)), key(std::move(key)) {}
  Value eval(Renderer& renderer) const override {
    Value target = object->evaluate(renderer);
    Value index = key->evaluate(renderer);
    renderer.line = line;
    return get_item(target, index);
  }
  ExprPtr object, key;
};

struct SliceExpr : Expr {
  using Expr::Expr;
  Value eval(Renderer& renderer) const override {
    Value target = object->evaluate(renderer);
    auto bound = [&](const ExprPtr& e) { return e ? e->evaluate(renderer) : Value::none(); };
    Value from = bound(start), to = bound(stop), by = bound(step);
    renderer.line = line;
    if (target.is_undefined()) fail_undefined(target);
    if (target.is_string()) {
      std::u32string s = decode_utf8(target.text), out;
      for (int64_t i : slice_indices(int64_t(s.size()), from, to, by)) out += s[i];
      return Value::from_string(encode_utf8(out));
    }
    if (!target.is_sequence()) runtime_fail("'{}' object is not subscriptable", type_name(target));
    List out;
    for (int64_t i : slice_indices(int64_t(target.items->size()), from, to, by))
      out.push_back((*target.items)[i]);
    return Value::from_list(std::move(out), target.kind == Value::Kind::tuple);
  }
  ExprPtr object, start, stop, step;
};

struct CallExpr : Expr {
  using Expr::Expr;
  Value eval(Renderer& renderer) const override {
    Value target = callee->evaluate(renderer);
    CallArgs args = arguments.evaluate(renderer);
    renderer.line = line;
    return call(renderer, target, args);
  }
  ExprPtr callee;
  Arguments arguments;
};

struct FilterCall {
  std::string name;
  Arguments arguments;
  int line = 0;
};

Value apply_filter_call(Renderer& renderer, const FilterCall& filter, const Value& input) {
  CallArgs args = filter.arguments.evaluate(renderer);
  renderer.line = filter.line;
  return apply_filter(renderer, filter.name, input, args);
}

struct FilterExpr : Expr {
  using Expr::Expr;
  Value eval(Renderer& renderer) const override {
    return apply_filter_call(renderer, filter, input->evaluate(renderer));
  }
  ExprPtr input;
  FilterCall filter;
};

struct TestExpr : Expr {
  using Expr::Expr;
  Value eval(Renderer& renderer) const override {
    Value subject = input->evaluate(renderer);
    CallArgs args = arguments.evaluate(renderer);
    renderer.line = line;
    return Value::from_bool(apply_test(renderer, name, subject, args) != negated);
  }
  ExprPtr input;
  std::string name;
  Arguments arguments;
  bool negated = false;
};

struct UnaryExpr : Expr {
  UnaryExpr(int line, std::string op, ExprPtr operand)
      : Expr(line), op(std::move(op)), operand(std::move(operand)) {}
  Value eval(Renderer& renderer) const override {
    Value v = operand->evaluate(renderer);
    renderer.line = line;
    if (op == "not") return Value::from_bool(!truthy(v));
    if (v.is_undefined()) fail_undefined(v);
    if (!v.is_number()) runtime_fail("bad operand type for unary {}: '{}'", op, type_name(v));
    if (op == "+") return v.is_integral() ? Value::from_int(v.as_int()) : v;
    return v.is_integral() ? Value::from_int(-v.as_int()) : Value::from_double(-v.floating);
  }
  std::string op;
  ExprPtr operand;
};

struct BinaryExpr : Expr {
  BinaryExpr(int line, std::string op, ExprPtr left, ExprPtr right)
      : Expr(line), op(std::move(op)), left(std::move(left)), right(std::move(right)) {}
  Value eval(Renderer& renderer) const override {
    Value a = left->evaluate(renderer);
    // `and` / `or` short-circuit and return an operand, as in Python.
    if (op == "and") return truthy(a) ? right->evaluate(renderer) : a;
    if (op == "or") return truthy(a) ? a : right->evaluate(renderer);
    Value b = right->evaluate(renderer);
    renderer.line = line;
    if (op == "~") return Value::from_string(to_str(a) + to_str(b));
    return arithmetic(op, a, b);
  }
  std::string op;
  ExprPtr left, right;
};

bool compare_values(const std::string& op, const Value& a, const Value& b) {
  if (op == "==") return equal(a, b);
  if (op == "!=") return !equal(a, b);
  if (op == "in") return contains(b, a);
  if (op == "not in") return !contains(b, a);
  int order = compare(a, b, op);
  return op == "<" ? order < 0 : op == "<=" ? order <= 0 : op == ">" ? order > 0 : order >= 0;
}

// a < b <= c: each link compares neighbours; the chain stops at the first false.
struct CompareExpr : Expr {
  using Expr::Expr;
  Value eval(Renderer& renderer) const override {
    Value current = first->evaluate(renderer);
    for (const auto& [op, operand] : rest) {
      Value next = operand->evaluate(renderer);
      renderer.line = line;
      if (!compare_values(op, current, next)) return Value::from_bool(false);
      current = std::move(next);
    }
    return Value::from_bool(true);
  }
  ExprPtr first;
  std::vector<std::pair<std::string, ExprPtr>> rest;
};

struct ConditionalExpr : Expr {
  using Expr::Expr;
  Value eval(Renderer& renderer) const override {
    if (truthy(condition->evaluate(renderer))) return then_value->evaluate(renderer);
    if (else_value) return else_value->evaluate(renderer);
    return Value::undefined("the inline if-expression on line " + std::to_string(line) +
                            " evaluated to false and no else section was defined.");
  }
  ExprPtr condition, then_value, else_value;
};

// ---------------------------------------------------------------------------------------------- statements

enum class Flow { normal, break_loop, continue_loop };

struct Stmt;
using StmtList = std::vector<std::unique_ptr<Stmt>>;

struct Stmt {
  explicit Stmt(int line) : line(line) {}
  virtual ~Stmt() = default;
  Flow execute(Renderer& renderer) const {
    renderer.line = line;
    return exec(renderer);
  }
  int line;

 private:
  virtual Flow exec(Renderer& renderer) const = 0;
};

Flow execute_all(Renderer& renderer, const StmtList& statements) {
  for (const auto& statement : statements) {
    Flow flow = statement->execute(renderer);
    if (flow != Flow::normal) return flow;
  }
  return Flow::normal;
}

struct TextStmt : Stmt {
  TextStmt(int line, std::string text) : Stmt(line), text(std::move(text)) {}
  Flow exec(Renderer& renderer) const override {
    *renderer.out += text;
    return Flow::normal;
  }
  std::string text;
};

struct OutputStmt : Stmt {
  OutputStmt(int line, ExprPtr expression) : Stmt(line), expression(std::move(expression)) {}
  Flow exec(Renderer& renderer) const override {
    *renderer.out += to_str(expression->evaluate(renderer));
    return Flow::normal;
  }
  ExprPtr expression;
};

struct IfStmt : Stmt {
  using Stmt::Stmt;
  Flow exec(Renderer& renderer) const override {
    for (const auto& [condition, body] : branches)
      if (truthy(condition->evaluate(renderer))) return execute_all(renderer, body);
    return execute_all(renderer, else_body);
  }
  std::vector<std::pair<ExprPtr, StmtList>> branches;
  StmtList else_body;
};

// An assignment target: a name, ns.attribute, or a tuple of names to unpack into.
struct Target {
  std::vector<std::string> names;  // one name, or the names of a tuple target
  std::string attribute;           // set for ns.attribute (names holds ns)
  bool tuple = false;
  int line = 0;
};

void assign_target(Renderer& renderer, const Target& target, const Value& value) {
  if (!target.attribute.empty()) {
    Value object = renderer.lookup(target.names[0]);
    if (object.kind != Value::Kind::object || object.object->type != Object::Type::name_space)
      runtime_fail("cannot assign attribute on non-namespace object");
    object.object->set(target.attribute, value);
    return;
  }
  if (!target.tuple) {
    renderer.assign(target.names[0], value);
    return;
  }
  List parts = iterate(value);
  if (parts.size() != target.names.size())
    runtime_fail("{} values to unpack (expected {}, got {})",
                 parts.size() > target.names.size() ? "too many" : "not enough", target.names.size(),
                 parts.size());
  for (size_t i = 0; i < parts.size(); ++i) renderer.assign(target.names[i], parts[i]);
}

Value make_loop(const List& items, size_t index) {
  auto loop = std::make_shared<Object>();
  loop->type = Object::Type::loop;
  int64_t n = int64_t(items.size()), i = int64_t(index);
  loop->attributes = {
      {"index", Value::from_int(i + 1)},
      {"index0", Value::from_int(i)},
      {"revindex", Value::from_int(n - i)},
      {"revindex0", Value::from_int(n - i - 1)},
      {"first", Value::from_bool(i == 0)},
      {"last", Value::from_bool(i == n - 1)},
      {"length", Value::from_int(n)},
      {"depth", Value::from_int(1)},
      {"depth0", Value::from_int(0)},
      {"previtem", i > 0 ? items[index - 1] : Value::undefined("there is no previous item")},
      {"nextitem", i + 1 < n ? items[index + 1] : Value::undefined("there is no next item")},
      {"cycle", Value::from_callable("loop.cycle",
                                     [i](Renderer&, CallArgs& args) {
                                       if (args.positional.empty())
                                         runtime_fail("no items for cycling given");
                                       return args.positional[size_t(i) % args.positional.size()];
                                     })},
  };
  return Value::from_object(loop);
}

struct ForStmt : Stmt {
  using Stmt::Stmt;
  Flow exec(Renderer& renderer) const override {
    List all = iterate(iterable->evaluate(renderer));
    List items;
    if (condition) {  // the `if` filter runs first, so loop.length counts the kept items
      for (const Value& item : all) {
        bool keep = in_scope(renderer, renderer.scope, [&] {
          assign_target(renderer, target, item);
          return truthy(condition->evaluate(renderer));
        });
        if (keep) items.push_back(item);
      }
    } else {
      items = std::move(all);
    }
    if (items.empty()) {
      in_scope(renderer, renderer.scope, [&] { return execute_all(renderer, else_body); });
      return Flow::normal;
    }
    for (size_t i = 0; i < items.size(); ++i) {
      // A fresh scope per iteration: jinja2 does not carry a {% set %} from one iteration to the next.
      Flow flow = in_scope(renderer, renderer.scope, [&] {
        assign_target(renderer, target, items[i]);
        renderer.assign("loop", make_loop(items, i));
        return execute_all(renderer, body);
      });
      if (flow == Flow::break_loop) break;
    }
    return Flow::normal;
  }
  Target target;
  ExprPtr iterable, condition;
  StmtList body, else_body;
};

struct LoopControlStmt : Stmt {
  LoopControlStmt(int line, Flow flow) : Stmt(line), flow(flow) {}
  Flow exec(Renderer&) const override { return flow; }
  Flow flow;
};

struct SetStmt : Stmt {
  using Stmt::Stmt;
  Flow exec(Renderer& renderer) const override {
    assign_target(renderer, target, value->evaluate(renderer));
    return Flow::normal;
  }
  Target target;
  ExprPtr value;
};

// {% set x | filters %}...{% endset %}
struct SetBlockStmt : Stmt {
  using Stmt::Stmt;
  Flow exec(Renderer& renderer) const override {
    Value value = Value::from_string(capture(renderer, [&] { execute_all(renderer, body); }));
    for (const auto& filter : filter_chain) value = apply_filter_call(renderer, filter, value);
    assign_target(renderer, target, value);
    return Flow::normal;
  }
  Target target;
  std::vector<FilterCall> filter_chain;
  StmtList body;
};

struct Parameter {
  std::string name;
  ExprPtr default_value;  // null: required
};

// A macro's or call block's signature and body; which of varargs, kwargs and caller its body reads.
struct MacroDefinition {
  std::string name;
  std::vector<Parameter> parameters;
  StmtList body;
  bool reads_varargs = false, reads_kwargs = false, reads_caller = false;
};

constexpr int kMaxCallDepth = 200;

// Binds the arguments in a scope whose parent is the scope the macro was defined in, so the macro sees
// that scope's variables as they are when it is called, and renders the body to a string.
Value call_macro(Renderer& renderer, const MacroDefinition& macro, const std::shared_ptr<Scope>& closure,
                 CallArgs& args) {
  if (renderer.call_depth >= kMaxCallDepth)
    runtime_fail("maximum recursion depth exceeded in macro '{}'", macro.name);
  ++renderer.call_depth;
  struct Depth {
    Renderer& r;
    ~Depth() { --r.call_depth; }
  } depth{renderer};
  size_t n_parameters = macro.parameters.size();
  if (args.positional.size() > n_parameters && !macro.reads_varargs)
    runtime_fail("macro '{}' takes not more than {} argument(s)", macro.name, n_parameters);
  return in_scope(renderer, closure, [&] {
    Dict extra_keywords;
    std::vector<bool> bound(n_parameters, false);
    for (size_t i = 0; i < n_parameters && i < args.positional.size(); ++i) {
      renderer.assign(macro.parameters[i].name, args.positional[i]);
      bound[i] = true;
    }
    for (auto& [name, value] : args.keyword) {
      if (name == "caller" && macro.reads_caller) {  // from a {% call %} block
        renderer.assign(name, value);
        continue;
      }
      auto found = std::find_if(macro.parameters.begin(), macro.parameters.end(),
                                [&](const Parameter& p) { return p.name == name; });
      if (found == macro.parameters.end()) {
        if (!macro.reads_kwargs) runtime_fail("macro '{}' takes no keyword argument '{}'", macro.name, name);
        extra_keywords.set(Value::from_string(name), value);
        continue;
      }
      size_t index = found - macro.parameters.begin();
      if (bound[index]) runtime_fail("macro '{}' got multiple values for argument '{}'", macro.name, name);
      renderer.assign(name, value);
      bound[index] = true;
    }
    for (size_t i = 0; i < n_parameters; ++i) {
      if (bound[i]) continue;
      const Parameter& parameter = macro.parameters[i];
      renderer.assign(parameter.name,
                      parameter.default_value
                          ? parameter.default_value->evaluate(renderer)
                          : Value::undefined(fmt::format("parameter '{}' was not provided", parameter.name)));
    }
    List extra_positional;
    for (size_t i = n_parameters; i < args.positional.size(); ++i)
      extra_positional.push_back(args.positional[i]);
    if (macro.reads_varargs) renderer.assign("varargs", Value::from_list(extra_positional, true));
    if (macro.reads_kwargs) renderer.assign("kwargs", Value::from_dict(extra_keywords));
    return Value::from_string(capture(renderer, [&] { execute_all(renderer, macro.body); }));
  });
}

// The macro holds its defining scope weakly: that scope holds the macro, and a strong reference would
// keep both alive after the render. A macro called after its scope ended is an error.
Value macro_value(const MacroDefinition& macro, const std::shared_ptr<Scope>& closure) {
  return Value::from_callable(
      macro.name, [&macro, weak = std::weak_ptr<Scope>(closure)](Renderer& renderer, CallArgs& args) {
        std::shared_ptr<Scope> scope = weak.lock();
        if (!scope) runtime_fail("macro '{}' called after the scope it was defined in ended", macro.name);
        return call_macro(renderer, macro, scope, args);
      });
}

struct MacroStmt : Stmt {
  using Stmt::Stmt;
  Flow exec(Renderer& renderer) const override {
    renderer.assign(macro.name, macro_value(macro, renderer.scope));
    return Flow::normal;
  }
  MacroDefinition macro;
};

// {% call(params) target(args) %}body{% endcall %}: target is called with caller() rendering body.
struct CallBlockStmt : Stmt {
  using Stmt::Stmt;
  Flow exec(Renderer& renderer) const override {
    Value caller = macro_value(caller_macro, renderer.scope);
    Value target = call_expression->callee->evaluate(renderer);
    CallArgs args = call_expression->arguments.evaluate(renderer);
    renderer.line = line;
    if (target.is_undefined()) fail_undefined(target);
    args.keyword.emplace_back("caller", caller);
    *renderer.out += to_str(call(renderer, target, args));
    return Flow::normal;
  }
  MacroDefinition caller_macro;
  std::unique_ptr<CallExpr> call_expression;
};

struct FilterBlockStmt : Stmt {
  using Stmt::Stmt;
  Flow exec(Renderer& renderer) const override {
    Value value = Value::from_string(capture(renderer, [&] { execute_all(renderer, body); }));
    for (const auto& filter : filter_chain) value = apply_filter_call(renderer, filter, value);
    *renderer.out += to_str(value);
    return Flow::normal;
  }
  std::vector<FilterCall> filter_chain;
  StmtList body;
};

// {% with a = 1 %}...{% endwith %} and transformers' {% generation %}...{% endgeneration %}: a scope.
struct ScopedBlockStmt : Stmt {
  using Stmt::Stmt;
  Flow exec(Renderer& renderer) const override {
    return in_scope(renderer, renderer.scope, [&] {
      // The values are evaluated in the outer scope before any is bound, as jinja2 does.
      List values;
      for (const auto& [target, value] : assignments) values.push_back(value->evaluate(renderer));
      for (size_t i = 0; i < values.size(); ++i) assign_target(renderer, assignments[i].first, values[i]);
      return execute_all(renderer, body);
    });
  }
  std::vector<std::pair<Target, ExprPtr>> assignments;
  StmtList body;
};

// ---------------------------------------------------------------------------------------------- lexer

enum class TokenType {
  text,
  variable_begin,
  variable_end,
  block_begin,
  block_end,
  name,
  string,
  integer,
  floating,
  op,
  end
};

struct Token {
  TokenType type;
  std::string value;
  int line;
};

std::string describe(const Token& token) {
  switch (token.type) {
    case TokenType::text:
      return "template data";
    case TokenType::variable_begin:
      return "'{{'";
    case TokenType::variable_end:
      return "'}}'";
    case TokenType::block_begin:
      return "'{%'";
    case TokenType::block_end:
      return "'%}'";
    case TokenType::end:
      return "end of template";
    case TokenType::string:
      return "string " + string_repr(token.value);
    default:
      return "'" + token.value + "'";
  }
}

bool is_name_start(char c) {
  return std::isalpha(static_cast<unsigned char>(c)) || c == '_';
}
bool is_name_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
}
bool is_ascii_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

// Splits the source into text and tag tokens, applying the whitespace rules as jinja2's lexer does with
// trim_blocks and lstrip_blocks: "-" strips all whitespace on that side; a block or comment tag removes
// the first newline after it (unless it ends with "+") and, when only spaces and tabs precede it on its
// line, those too (unless it starts with "+"). Expression tags {{ }} take part in neither.
class Lexer {
 public:
  Lexer(std::string source, const std::string& name) : source_(std::move(source)), name_(name) {
    normalize_newlines();
  }

  std::vector<Token> run() {
    while (pos_ < source_.size()) {
      size_t tag = find_tag(pos_);
      std::string text = source_.substr(pos_, tag - pos_);
      int text_line = line_;
      advance_to(tag);
      if (tag == source_.size()) {
        emit_text(text, text_line, '\0', false);
        break;
      }
      char kind = source_[tag + 1];
      char modifier = tag + 2 < source_.size() ? source_[tag + 2] : '\0';
      bool is_block = kind != '{';
      emit_text(text, text_line, modifier, is_block);
      if (kind == '#')
        lex_comment(modifier);
      else
        lex_tag(kind, modifier);
    }
    tokens_.push_back({TokenType::end, "", line_});
    return std::move(tokens_);
  }

 private:
  [[noreturn]] void fail_at(int line, const std::string& message) const {
    fail("{}:{}: {}", name_, line, message);
  }

  // jinja2 reads "\r\n" and "\r" as "\n" and, with keep_trailing_newline=False, drops one final newline.
  void normalize_newlines() {
    std::string normalized;
    for (size_t i = 0; i < source_.size(); ++i) {
      if (source_[i] == '\r') {
        normalized += '\n';
        if (i + 1 < source_.size() && source_[i + 1] == '\n') ++i;
      } else {
        normalized += source_[i];
      }
    }
    if (!normalized.empty() && normalized.back() == '\n') normalized.pop_back();
    source_ = std::move(normalized);
  }

  size_t find_tag(size_t from) const {
    for (size_t i = from; i + 1 < source_.size(); ++i)
      if (source_[i] == '{' && (source_[i + 1] == '{' || source_[i + 1] == '%' || source_[i + 1] == '#'))
        return i;
    return source_.size();
  }

  void advance_to(size_t position) {
    line_ += int(std::count(source_.begin() + pos_, source_.begin() + position, '\n'));
    pos_ = position;
  }

  // `text` precedes a tag that starts with `modifier` ('-', '+' or other) and is a block or comment tag
  // when `before_block`; pending_ says what the previous tag asked of the text after it.
  void emit_text(std::string text, int line, char modifier, bool before_block) {
    if (pending_ == After::strip_whitespace) {
      size_t begin = 0;
      while (begin < text.size() && is_ascii_space(text[begin])) ++begin;
      line += int(std::count(text.begin(), text.begin() + begin, '\n'));
      text.erase(0, begin);
    } else if (pending_ == After::trim_newline && !text.empty() && text[0] == '\n') {
      text.erase(0, 1);
      ++line;
      line_starting_ = true;
    }
    if (modifier == '-') {
      while (!text.empty() && is_ascii_space(text.back())) text.pop_back();
    } else if (before_block && modifier != '+') {
      size_t newline = text.rfind('\n');
      size_t line_start = newline == std::string::npos ? 0 : newline + 1;
      bool only_blanks = text.find_first_not_of(" \t", line_start) == std::string::npos;
      if ((newline != std::string::npos || line_starting_) && only_blanks) text.erase(line_start);
    }
    if (!text.empty()) tokens_.push_back({TokenType::text, std::move(text), line});
    pending_ = After::nothing;
    line_starting_ = false;
  }

  // After a tag's end marker: what it does to the text that follows.
  void set_pending(char end_modifier, bool is_block) {
    if (end_modifier == '-')
      pending_ = After::strip_whitespace;
    else if (is_block && end_modifier != '+')
      pending_ = After::trim_newline;
    else
      pending_ = After::nothing;
  }

  void lex_comment(char modifier) {
    int start_line = line_;
    size_t body = pos_ + 2 + (modifier == '-' || modifier == '+' ? 1 : 0);
    size_t close = source_.find("#}", body);
    if (close == std::string::npos) fail_at(start_line, "unexpected end of template: comment never closed");
    char end_modifier =
        close > body && (source_[close - 1] == '-' || source_[close - 1] == '+') ? source_[close - 1] : '\0';
    advance_to(close + 2);
    set_pending(end_modifier, true);
  }

  void lex_tag(char kind, char modifier) {
    bool is_block = kind == '%';
    int start_line = line_;
    size_t begin_index = tokens_.size();
    tokens_.push_back({is_block ? TokenType::block_begin : TokenType::variable_begin, "", line_});
    bool has_modifier = modifier == '-' || (is_block && modifier == '+');
    advance_to(pos_ + 2 + (has_modifier ? 1 : 0));
    std::string closer = is_block ? "%}" : "}}";
    int depth = 0;  // open brackets: "}}" inside {"a": {}} does not end the tag, as in jinja2
    while (true) {
      while (pos_ < source_.size() && is_ascii_space(source_[pos_])) advance_to(pos_ + 1);
      if (pos_ >= source_.size())
        fail_at(start_line, fmt::format("unexpected end of template: tag never closed with '{}'", closer));
      if (depth == 0) {
        char end_modifier = source_[pos_];
        bool with_modifier = (end_modifier == '-' || (is_block && end_modifier == '+')) &&
                             source_.compare(pos_ + 1, 2, closer) == 0;
        if (with_modifier || source_.compare(pos_, 2, closer) == 0) {
          advance_to(pos_ + 2 + (with_modifier ? 1 : 0));
          tokens_.push_back({is_block ? TokenType::block_end : TokenType::variable_end, "", line_});
          set_pending(with_modifier ? end_modifier : '\0', is_block);
          if (is_block) lex_raw_if_opened(begin_index);
          return;
        }
      }
      lex_expression_token(depth);
    }
  }

  // {% raw %}...{% endraw %}: the body is text; the raw tags' own whitespace control still applies.
  void lex_raw_if_opened(size_t begin_index) {
    if (tokens_.size() != begin_index + 3 || tokens_[begin_index + 1].type != TokenType::name ||
        tokens_[begin_index + 1].value != "raw")
      return;
    int raw_line = tokens_[begin_index].line;
    tokens_.resize(begin_index);
    size_t search = pos_;
    while (true) {
      size_t open = source_.find("{%", search);
      if (open == std::string::npos) fail_at(raw_line, "'raw' is never closed: expected 'endraw'");
      size_t i = open + 2;
      char modifier = i < source_.size() && (source_[i] == '-' || source_[i] == '+') ? source_[i++] : '\0';
      while (i < source_.size() && is_ascii_space(source_[i])) ++i;
      if (source_.compare(i, 6, "endraw") != 0) {
        search = open + 2;
        continue;
      }
      i += 6;
      while (i < source_.size() && is_ascii_space(source_[i])) ++i;
      char end_modifier =
          i < source_.size() && (source_[i] == '-' || source_[i] == '+') ? source_[i++] : '\0';
      if (source_.compare(i, 2, "%}") != 0) fail_at(line_, "malformed 'endraw' tag");
      std::string body = source_.substr(pos_, open - pos_);
      int body_line = line_;
      if (pending_ == After::trim_newline) pending_ = After::nothing;  // jinja2 trims no newline after raw
      advance_to(open);
      emit_text(body, body_line, modifier, true);
      advance_to(i + 2);
      set_pending(end_modifier, true);
      return;
    }
  }

  void lex_expression_token(int& depth) {
    char c = source_[pos_];
    if (is_name_start(c)) {
      size_t end = pos_;
      while (end < source_.size() && is_name_char(source_[end])) ++end;
      push(TokenType::name, source_.substr(pos_, end - pos_), end);
    } else if (std::isdigit(static_cast<unsigned char>(c))) {
      lex_number();
    } else if (c == '\'' || c == '"') {
      lex_string(c);
    } else {
      static const char* const two_char[] = {"//", "**", "==", "!=", "<=", ">="};
      for (const char* op : two_char) {
        if (source_.compare(pos_, 2, op) == 0) {
          push(TokenType::op, op, pos_ + 2);
          return;
        }
      }
      if (std::string_view("+-*/%~|.,:()[]{}=<>").find(c) == std::string_view::npos)
        fail_at(line_, fmt::format("unexpected char '{}'", c));
      if (c == '(' || c == '[' || c == '{') ++depth;
      if (c == ')' || c == ']' || c == '}') {
        if (depth == 0) fail_at(line_, fmt::format("unexpected '{}'", c));
        --depth;
      }
      push(TokenType::op, std::string(1, c), pos_ + 1);
    }
  }

  void push(TokenType type, std::string value, size_t end) {
    tokens_.push_back({type, std::move(value), line_});
    advance_to(end);
  }

  // 42, 1_000, 3.14, 1e-5: digits after a '.' that follows a '.' are an attribute index (a.0.1).
  void lex_number() {
    auto digits = [&](size_t i) {
      while (i < source_.size() &&
             (std::isdigit(static_cast<unsigned char>(source_[i])) || source_[i] == '_'))
        ++i;
      return i;
    };
    size_t end = digits(pos_);
    bool is_float = false;
    bool after_dot = pos_ > 0 && source_[pos_ - 1] == '.';
    if (!after_dot && end + 1 < source_.size() && source_[end] == '.' &&
        std::isdigit(static_cast<unsigned char>(source_[end + 1]))) {
      end = digits(end + 1);
      is_float = true;
    }
    if (!after_dot && end < source_.size() && (source_[end] == 'e' || source_[end] == 'E')) {
      size_t exponent = end + 1;
      if (exponent < source_.size() && (source_[exponent] == '+' || source_[exponent] == '-')) ++exponent;
      if (exponent < source_.size() && std::isdigit(static_cast<unsigned char>(source_[exponent]))) {
        end = digits(exponent);
        is_float = true;
      }
    }
    std::string text = source_.substr(pos_, end - pos_);
    text.erase(std::remove(text.begin(), text.end(), '_'), text.end());
    push(is_float ? TokenType::floating : TokenType::integer, text, end);
  }

  // A string literal with Python's escapes (jinja2 decodes them with "unicode-escape").
  void lex_string(char quote) {
    int start_line = line_;
    std::string value;
    size_t i = pos_ + 1;
    auto hex = [&](size_t count) {
      if (i + count > source_.size()) fail_at(line_, "truncated \\x, \\u or \\U escape");
      char32_t code = 0;
      for (size_t k = 0; k < count; ++k) {
        char h = source_[i + k];
        if (!std::isxdigit(static_cast<unsigned char>(h))) fail_at(line_, "truncated \\x, \\u or \\U escape");
        code = code * 16 +
               char32_t(std::isdigit(static_cast<unsigned char>(h)) ? h - '0' : std::tolower(h) - 'a' + 10);
      }
      i += count;
      append_utf8(value, code);
    };
    while (true) {
      if (i >= source_.size()) fail_at(start_line, "unexpected end of string");
      char c = source_[i];
      if (c == quote) break;
      if (c != '\\') {
        value += c;
        ++i;
        continue;
      }
      char e = i + 1 < source_.size() ? source_[i + 1] : '\0';
      i += 2;
      switch (e) {
        case 'n':
          value += '\n';
          break;
        case 't':
          value += '\t';
          break;
        case 'r':
          value += '\r';
          break;
        case 'a':
          value += '\a';
          break;
        case 'b':
          value += '\b';
          break;
        case 'f':
          value += '\f';
          break;
        case 'v':
          value += '\v';
          break;
        case '\\':
          value += '\\';
          break;
        case '\'':
          value += '\'';
          break;
        case '"':
          value += '"';
          break;
        case '\n':
          break;  // a backslash-newline continues the line
        case 'x':
          hex(2);
          break;
        case 'u':
          hex(4);
          break;
        case 'U':
          hex(8);
          break;
        case 'N':
          fail_at(line_, "unsupported '\\N{...}' escape in a string");
        default:
          if (e >= '0' && e <= '7') {
            char32_t code = e - '0';
            for (int k = 0; k < 2 && i < source_.size() && source_[i] >= '0' && source_[i] <= '7'; ++k)
              code = code * 8 + (source_[i++] - '0');
            append_utf8(value, code);
          } else {
            value += '\\';
            value += e;
          }
      }
    }
    push(TokenType::string, value, i + 1);
  }

  enum class After { nothing, strip_whitespace, trim_newline };

  std::string source_;
  const std::string& name_;
  size_t pos_ = 0;
  int line_ = 1;
  After pending_ = After::nothing;
  bool line_starting_ = true;  // the template start counts as a line start for lstrip_blocks
  std::vector<Token> tokens_;
};

// ---------------------------------------------------------------------------------------------- parser

const std::unordered_set<std::string> kUnsupportedTags = {
    "include", "extends", "import", "from", "block", "do", "autoescape", "trans", "pluralize"};

class Parser {
 public:
  Parser(std::vector<Token> tokens, const std::string& name) : tokens_(std::move(tokens)), name_(name) {}

  StmtList parse_template() {
    StmtList body = parse_body({}, nullptr);
    return body;
  }

 private:
  [[noreturn]] void fail_at(int line, const std::string& message) const {
    fail("{}:{}: {}", name_, line, message);
  }
  [[noreturn]] void unexpected(const Token& token) const {
    fail_at(token.line, "unexpected " + describe(token));
  }

  const Token& peek(size_t ahead = 0) const { return tokens_[std::min(pos_ + ahead, tokens_.size() - 1)]; }
  const Token& next() {
    const Token& token = peek();
    if (pos_ < tokens_.size() - 1) ++pos_;
    return token;
  }
  bool at_op(std::string_view op, size_t ahead = 0) const {
    return peek(ahead).type == TokenType::op && peek(ahead).value == op;
  }
  bool at_name(std::string_view name, size_t ahead = 0) const {
    return peek(ahead).type == TokenType::name && peek(ahead).value == name;
  }
  bool skip_op(std::string_view op) {
    if (!at_op(op)) return false;
    next();
    return true;
  }
  bool skip_name(std::string_view name) {
    if (!at_name(name)) return false;
    next();
    return true;
  }
  void expect_op(std::string_view op) {
    if (!skip_op(op)) fail_at(peek().line, fmt::format("expected '{}', got {}", op, describe(peek())));
  }
  std::string expect_name() {
    if (peek().type != TokenType::name) fail_at(peek().line, "expected a name, got " + describe(peek()));
    return next().value;
  }
  void expect_block_end() {
    if (peek().type != TokenType::block_end)
      fail_at(peek().line, "expected end of statement block, got " + describe(peek()));
    next();
  }

  // Statements until one of `end_tags` (its name is consumed and stored in *found; the rest of that tag
  // is the caller's to parse) or, for the template itself, the end.
  StmtList parse_body(const std::vector<std::string_view>& end_tags, std::string* found, int opened_line = 0,
                      std::string_view opened = "") {
    StmtList body;
    while (true) {
      const Token& token = peek();
      if (token.type == TokenType::end) {
        if (end_tags.empty()) return body;
        fail_at(opened_line, fmt::format("'{}' is never closed: expected '{}'", opened, end_tags.back()));
      }
      if (token.type == TokenType::text) {
        body.push_back(std::make_unique<TextStmt>(token.line, token.value));
        next();
      } else if (token.type == TokenType::variable_begin) {
        next();
        auto expression = parse_tuple();
        if (peek().type != TokenType::variable_end)
          fail_at(peek().line, "expected '}}', got " + describe(peek()));
        next();
        body.push_back(std::make_unique<OutputStmt>(token.line, std::move(expression)));
      } else if (token.type == TokenType::block_begin) {
        const Token& tag = peek(1);
        if (tag.type != TokenType::name) fail_at(tag.line, "expected a tag name, got " + describe(tag));
        if (std::find(end_tags.begin(), end_tags.end(), tag.value) != end_tags.end()) {
          next();
          *found = next().value;
          return body;
        }
        next();
        body.push_back(parse_statement());
      } else {
        unexpected(token);
      }
    }
  }

  std::unique_ptr<Stmt> parse_statement() {
    const Token& tag = next();
    int line = tag.line;
    const std::string& name = tag.value;
    if (name == "if") return parse_if(line);
    if (name == "for") return parse_for(line);
    if (name == "set") return parse_set(line);
    if (name == "macro") return parse_macro(line);
    if (name == "call") return parse_call_block(line);
    if (name == "filter") return parse_filter_block(line);
    if (name == "with") return parse_with(line);
    if (name == "generation") return parse_generation(line);
    if (name == "break" || name == "continue") {
      if (loop_depth_ == 0) fail_at(line, fmt::format("'{}' outside of a loop", name));
      expect_block_end();
      return std::make_unique<LoopControlStmt>(line,
                                               name == "break" ? Flow::break_loop : Flow::continue_loop);
    }
    if (kUnsupportedTags.count(name)) fail_at(line, fmt::format("unsupported '{}'", name));
    fail_at(line, fmt::format("unknown tag '{}'", name));
  }

  std::unique_ptr<Stmt> parse_if(int line) {
    auto statement = std::make_unique<IfStmt>(line);
    ExprPtr condition = parse_expression();
    expect_block_end();
    while (true) {
      std::string found;
      StmtList body = parse_body({"elif", "else", "endif"}, &found, line, "if");
      statement->branches.emplace_back(std::move(condition), std::move(body));
      if (found == "elif") {
        condition = parse_expression();
        expect_block_end();
        continue;
      }
      if (found == "else") {
        expect_block_end();
        statement->else_body = parse_body({"endif"}, &found, line, "if");
      }
      expect_block_end();
      return statement;
    }
  }

  Target parse_target(bool allow_attribute) {
    Target target;
    target.line = peek().line;
    bool parenthesized = skip_op("(");
    target.names.push_back(expect_name());
    if (allow_attribute && !parenthesized && skip_op(".")) {
      target.attribute = expect_name();
      return target;
    }
    while (skip_op(",")) {
      target.tuple = true;
      if (peek().type != TokenType::name) break;  // a trailing comma: "for a, in x"
      target.names.push_back(expect_name());
    }
    if (parenthesized) {
      expect_op(")");
      target.tuple = true;
    }
    return target;
  }

  std::unique_ptr<Stmt> parse_for(int line) {
    auto statement = std::make_unique<ForStmt>(line);
    statement->target = parse_target(false);
    if (!skip_name("in")) fail_at(peek().line, "expected 'in', got " + describe(peek()));
    statement->iterable = parse_tuple(false);
    if (skip_name("if")) statement->condition = parse_expression();
    if (at_name("recursive")) fail_at(peek().line, "unsupported 'recursive'");
    expect_block_end();
    std::string found;
    ++loop_depth_;
    statement->body = parse_body({"else", "endfor"}, &found, line, "for");
    --loop_depth_;
    if (found == "else") {
      expect_block_end();
      statement->else_body = parse_body({"endfor"}, &found, line, "for");
    }
    expect_block_end();
    return statement;
  }

  std::unique_ptr<Stmt> parse_set(int line) {
    Target target = parse_target(true);
    if (skip_op("=")) {
      auto statement = std::make_unique<SetStmt>(line);
      statement->target = std::move(target);
      statement->value = parse_tuple();
      expect_block_end();
      return statement;
    }
    auto statement = std::make_unique<SetBlockStmt>(line);
    statement->target = std::move(target);
    while (skip_op("|")) statement->filter_chain.push_back(parse_filter_call());
    expect_block_end();
    std::string found;
    statement->body = parse_body({"endset"}, &found, line, "set");
    expect_block_end();
    return statement;
  }

  void parse_parameters(MacroDefinition& macro) {
    expect_op("(");
    while (!skip_op(")")) {
      if (!macro.parameters.empty()) expect_op(",");
      if (skip_op(")")) break;
      Parameter parameter;
      parameter.name = expect_name();
      if (skip_op("="))
        parameter.default_value = parse_expression();
      else if (!macro.parameters.empty() && macro.parameters.back().default_value)
        fail_at(peek().line, "non-default argument follows default argument");
      macro.parameters.push_back(std::move(parameter));
    }
  }

  // The body of a macro or call block: loop controls do not reach out of it, and the names it reads
  // decide whether it takes varargs, kwargs and caller.
  void parse_macro_body(MacroDefinition& macro, int line, std::string_view opened, std::string_view end_tag) {
    int saved_loop_depth = std::exchange(loop_depth_, 0);
    read_names_.emplace_back();
    std::string found;
    macro.body = parse_body({end_tag}, &found, line, opened);
    const auto& names = read_names_.back();
    macro.reads_varargs = names.count("varargs") > 0;
    macro.reads_kwargs = names.count("kwargs") > 0;
    macro.reads_caller = names.count("caller") > 0;
    read_names_.pop_back();
    loop_depth_ = saved_loop_depth;
    if (at_name(macro.name)) next();  // {% endmacro name %} is allowed
    expect_block_end();
  }

  std::unique_ptr<Stmt> parse_macro(int line) {
    auto statement = std::make_unique<MacroStmt>(line);
    statement->macro.name = expect_name();
    parse_parameters(statement->macro);
    expect_block_end();
    parse_macro_body(statement->macro, line, "macro", "endmacro");
    return statement;
  }

  std::unique_ptr<Stmt> parse_call_block(int line) {
    auto statement = std::make_unique<CallBlockStmt>(line);
    statement->caller_macro.name = "caller";
    if (at_op("(")) parse_parameters(statement->caller_macro);
    ExprPtr expression = parse_expression();
    auto* call_expression = dynamic_cast<CallExpr*>(expression.get());
    if (!call_expression) fail_at(line, "expected a call after 'call'");
    expression.release();
    statement->call_expression.reset(call_expression);
    expect_block_end();
    parse_macro_body(statement->caller_macro, line, "call", "endcall");
    return statement;
  }

  std::unique_ptr<Stmt> parse_filter_block(int line) {
    auto statement = std::make_unique<FilterBlockStmt>(line);
    statement->filter_chain.push_back(parse_filter_call());
    while (skip_op("|")) statement->filter_chain.push_back(parse_filter_call());
    expect_block_end();
    std::string found;
    statement->body = parse_body({"endfilter"}, &found, line, "filter");
    expect_block_end();
    return statement;
  }

  std::unique_ptr<Stmt> parse_with(int line) {
    auto statement = std::make_unique<ScopedBlockStmt>(line);
    while (peek().type != TokenType::block_end) {
      if (!statement->assignments.empty()) expect_op(",");
      Target target = parse_target(false);
      expect_op("=");
      statement->assignments.emplace_back(std::move(target), parse_expression());
    }
    expect_block_end();
    std::string found;
    statement->body = parse_body({"endwith"}, &found, line, "with");
    expect_block_end();
    return statement;
  }

  std::unique_ptr<Stmt> parse_generation(int line) {
    auto statement = std::make_unique<ScopedBlockStmt>(line);
    expect_block_end();
    std::string found;
    statement->body = parse_body({"endgeneration"}, &found, line, "generation");
    expect_block_end();
    return statement;
  }

  // ------------------------------------------------------------------ expressions (jinja2's precedence)

  // expr, expr, ...: a tuple without parentheses, as in {% set a = 1, 2 %}.
  ExprPtr parse_tuple(bool with_condexpr = true) {
    int line = peek().line;
    ExprPtr first = parse_expression(with_condexpr);
    if (!at_op(",")) return first;
    std::vector<ExprPtr> items;
    items.push_back(std::move(first));
    while (skip_op(",")) {
      if (peek().type == TokenType::block_end || peek().type == TokenType::variable_end || at_op(")")) break;
      items.push_back(parse_expression(with_condexpr));
    }
    return std::make_unique<ListExpr>(line, std::move(items), true);
  }

  ExprPtr parse_expression(bool with_condexpr = true) {
    return with_condexpr ? parse_conditional() : parse_or();
  }

  ExprPtr parse_conditional() {
    ExprPtr value = parse_or();
    while (at_name("if")) {
      int line = next().line;
      auto conditional = std::make_unique<ConditionalExpr>(line);
      conditional->then_value = std::move(value);
      conditional->condition = parse_or();
      if (skip_name("else")) conditional->else_value = parse_conditional();
      value = std::move(conditional);
    }
    return value;
  }

  ExprPtr parse_or() {
    ExprPtr left = parse_and();
    while (at_name("or")) {
      int line = next().line;
      left = std::make_unique<BinaryExpr>(line, "or", std::move(left), parse_and());
    }
    return left;
  }

  ExprPtr parse_and() {
    ExprPtr left = parse_not();
    while (at_name("and")) {
      int line = next().line;
      left = std::make_unique<BinaryExpr>(line, "and", std::move(left), parse_not());
    }
    return left;
  }

  ExprPtr parse_not() {
    if (at_name("not")) {
      int line = next().line;
      return std::make_unique<UnaryExpr>(line, "not", parse_not());
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    int line = peek().line;
    ExprPtr first = parse_math1();
    auto comparison = std::make_unique<CompareExpr>(line);
    while (true) {
      std::string op;
      if (peek().type == TokenType::op &&
          (at_op("==") || at_op("!=") || at_op("<") || at_op("<=") || at_op(">") || at_op(">="))) {
        op = next().value;
      } else if (at_name("in")) {
        next();
        op = "in";
      } else if (at_name("not") && at_name("in", 1)) {
        next();
        next();
        op = "not in";
      } else {
        break;
      }
      comparison->rest.emplace_back(op, parse_math1());
    }
    if (comparison->rest.empty()) return first;
    comparison->first = std::move(first);
    return comparison;
  }

  template <typename Next>
  ExprPtr parse_binary(std::initializer_list<std::string_view> ops, Next next_level) {
    ExprPtr left = (this->*next_level)();
    while (true) {
      auto op = std::find_if(ops.begin(), ops.end(), [&](std::string_view o) { return at_op(o); });
      if (op == ops.end()) return left;
      int line = next().line;
      left = std::make_unique<BinaryExpr>(line, std::string(*op), std::move(left), (this->*next_level)());
    }
  }

  ExprPtr parse_math1() { return parse_binary({"+", "-"}, &Parser::parse_concat); }
  ExprPtr parse_concat() { return parse_binary({"~"}, &Parser::parse_math2); }
  ExprPtr parse_math2() { return parse_binary({"*", "/", "//", "%"}, &Parser::parse_pow); }
  ExprPtr parse_pow() { return parse_binary({"**"}, &Parser::parse_unary_with_filters); }
  ExprPtr parse_unary_with_filters() { return parse_unary(true); }

  // Unary minus binds tighter than filters: -x|abs is (-x)|abs.
  ExprPtr parse_unary(bool with_filters) {
    ExprPtr node;
    if (at_op("-") || at_op("+")) {
      const Token& op = next();
      node = std::make_unique<UnaryExpr>(op.line, op.value, parse_unary(false));
    } else {
      node = parse_primary();
    }
    node = parse_postfix(std::move(node));
    if (with_filters) node = parse_filters_and_tests(std::move(node));
    return node;
  }

  ExprPtr parse_primary() {
    const Token& token = peek();
    int line = token.line;
    switch (token.type) {
      case TokenType::name: {
        std::string name = next().value;
        if (name == "true" || name == "True") return std::make_unique<Literal>(line, Value::from_bool(true));
        if (name == "false" || name == "False")
          return std::make_unique<Literal>(line, Value::from_bool(false));
        if (name == "none" || name == "None") return std::make_unique<Literal>(line, Value::none());
        for (auto& names : read_names_) names.insert(name);
        return std::make_unique<Name>(line, name);
      }
      case TokenType::string: {
        std::string text;
        while (peek().type == TokenType::string) text += next().value;  // "a" "b" concatenates
        return std::make_unique<Literal>(line, Value::from_string(text));
      }
      case TokenType::integer: {
        std::string digits = next().value;
        errno = 0;
        long long value = std::strtoll(digits.c_str(), nullptr, 10);
        if (errno == ERANGE) fail_at(line, "integer literal " + digits + " does not fit in 64 bits");
        return std::make_unique<Literal>(line, Value::from_int(value));
      }
      case TokenType::floating:
        return std::make_unique<Literal>(line,
                                         Value::from_double(std::strtod(next().value.c_str(), nullptr)));
      case TokenType::op:
        if (at_op("(")) return parse_parenthesized();
        if (at_op("[")) return parse_list();
        if (at_op("{")) return parse_dict();
        break;
      default:
        break;
    }
    unexpected(token);
  }

  ExprPtr parse_parenthesized() {
    int line = next().line;
    if (skip_op(")")) return std::make_unique<ListExpr>(line, std::vector<ExprPtr>{}, true);
    ExprPtr first = parse_expression();
    if (skip_op(")")) return first;
    std::vector<ExprPtr> items;
    items.push_back(std::move(first));
    while (skip_op(",")) {
      if (at_op(")")) break;
      items.push_back(parse_expression());
    }
    expect_op(")");
    return std::make_unique<ListExpr>(line, std::move(items), true);
  }

  ExprPtr parse_list() {
    int line = next().line;
    std::vector<ExprPtr> items;
    while (!skip_op("]")) {
      if (!items.empty()) expect_op(",");
      if (skip_op("]")) break;
      items.push_back(parse_expression());
    }
    return std::make_unique<ListExpr>(line, std::move(items), false);
  }

  ExprPtr parse_dict() {
    auto dict = std::make_unique<DictExpr>(next().line);
    while (!skip_op("}")) {
      if (!dict->entries.empty()) expect_op(",");
      if (skip_op("}")) break;
      ExprPtr key = parse_expression();
      expect_op(":");
      dict->entries.emplace_back(std::move(key), parse_expression());
    }
    return dict;
  }

  ExprPtr parse_postfix(ExprPtr node) {
    while (true) {
      if (at_op(".")) {
        int line = next().line;
        const Token& attribute = next();
        if (attribute.type == TokenType::name)
          node = std::make_unique<GetAttr>(line, std::move(node), attribute.value);
        else if (attribute.type == TokenType::integer)
          node = std::make_unique<GetItem>(
              line, std::move(node),
              std::make_unique<Literal>(line, Value::from_int(std::stoll(attribute.value))));
        else
          unexpected(attribute);
      } else if (at_op("[")) {
        node = parse_subscript(std::move(node));
      } else if (at_op("(")) {
        node = parse_call(std::move(node));
      } else {
        return node;
      }
    }
  }

  ExprPtr parse_subscript(ExprPtr object) {
    int line = next().line;
    ExprPtr start;
    if (!at_op(":")) start = parse_expression();
    if (skip_op("]")) return std::make_unique<GetItem>(line, std::move(object), std::move(start));
    auto slice = std::make_unique<SliceExpr>(line);
    slice->object = std::move(object);
    slice->start = std::move(start);
    expect_op(":");
    if (!at_op("]") && !at_op(":")) slice->stop = parse_expression();
    if (skip_op(":") && !at_op("]")) slice->step = parse_expression();
    expect_op("]");
    return slice;
  }

  Arguments parse_arguments() {
    Arguments arguments;
    expect_op("(");
    bool first = true;
    while (!skip_op(")")) {
      if (!first) expect_op(",");
      first = false;
      if (skip_op(")")) break;
      if (at_op("*") || at_op("**")) fail_at(peek().line, "unsupported '" + peek().value + "' in a call");
      if (peek().type == TokenType::name && at_op("=", 1)) {
        std::string keyword = next().value;
        next();
        arguments.keyword.emplace_back(keyword, parse_expression());
      } else {
        if (!arguments.keyword.empty()) fail_at(peek().line, "positional argument follows keyword argument");
        arguments.positional.push_back(parse_expression());
      }
    }
    return arguments;
  }

  ExprPtr parse_call(ExprPtr callee) {
    auto call_expression = std::make_unique<CallExpr>(peek().line);
    call_expression->callee = std::move(callee);
    call_expression->arguments = parse_arguments();
    return call_expression;
  }

  FilterCall parse_filter_call() {
    FilterCall filter;
    filter.line = peek().line;
    filter.name = expect_name();
    while (at_op(".") && peek(1).type == TokenType::name) {
      next();
      filter.name += "." + next().value;
    }
    if (kUnsupportedFilters.count(filter.name))
      fail_at(filter.line, fmt::format("unsupported filter '{}'", filter.name));
    if (!filters().count(filter.name)) fail_at(filter.line, fmt::format("no filter named '{}'", filter.name));
    if (at_op("(")) filter.arguments = parse_arguments();
    return filter;
  }

  ExprPtr parse_filters_and_tests(ExprPtr node) {
    while (true) {
      if (at_op("|")) {
        int line = next().line;
        auto filter = std::make_unique<FilterExpr>(line);
        filter->input = std::move(node);
        filter->filter = parse_filter_call();
        node = std::move(filter);
      } else if (at_name("is")) {
        node = parse_test(std::move(node));
      } else if (at_op("(")) {
        node = parse_call(std::move(node));
      } else {
        return node;
      }
    }
  }

  ExprPtr parse_test(ExprPtr subject) {
    auto test = std::make_unique<TestExpr>(next().line);
    test->input = std::move(subject);
    test->negated = skip_name("not");
    test->name = expect_name();
    while (at_op(".") && peek(1).type == TokenType::name) {
      next();
      test->name += "." + next().value;
    }
    if (!tests().count(test->name)) fail_at(test->line, fmt::format("no test named '{}'", test->name));
    const Token& token = peek();
    bool single_argument =
        (token.type == TokenType::name || token.type == TokenType::string ||
         token.type == TokenType::integer || token.type == TokenType::floating || at_op("[") || at_op("{")) &&
        !at_name("else") && !at_name("or") && !at_name("and");
    if (at_op("(")) {
      test->arguments = parse_arguments();
    } else if (single_argument) {
      if (at_name("is")) fail_at(token.line, "You cannot chain multiple tests with is");
      test->arguments.positional.push_back(parse_postfix(parse_primary()));  // `is divisibleby 3`
    }
    return test;
  }

  std::vector<Token> tokens_;
  const std::string& name_;
  size_t pos_ = 0;
  int loop_depth_ = 0;
  std::vector<std::unordered_set<std::string>> read_names_;  // names read in each enclosing macro body
};

// ---------------------------------------------------------------------------------------------- globals

std::shared_ptr<Scope> make_globals() {
  auto globals = std::make_shared<Scope>();
  auto define = [&](const std::string& name, std::function<Value(Renderer&, CallArgs&)> function) {
    globals->variables[name] = Value::from_callable(name, std::move(function));
  };
  define("raise_exception", [](Renderer&, CallArgs& args) -> Value {
    Value message = bind_arguments(args, {"message"}, "raise_exception")[0];
    throw RaisedByTemplate{to_str(message)};
  });
  define("strftime_now", [](Renderer& renderer, CallArgs& args) {
    std::string format = string_argument(bind_arguments(args, {"format"}, "strftime_now")[0], "strftime_now");
    char buffer[512];
    size_t n = format.empty() ? 0 : std::strftime(buffer, sizeof buffer, format.c_str(), &renderer.now);
    return Value::from_string(std::string(buffer, n));
  });
  define("namespace", [](Renderer&, CallArgs& args) {
    auto object = std::make_shared<Object>();
    object->type = Object::Type::name_space;
    for (const Value& initial : args.positional) {
      if (initial.kind != Value::Kind::dict) runtime_fail("namespace() takes a dict and keyword arguments");
      for (const auto& [k, v] : initial.dict->entries) object->set(to_str(k), v);
    }
    for (const auto& [k, v] : args.keyword) object->set(k, v);
    return Value::from_object(object);
  });
  define("dict", [](Renderer&, CallArgs& args) {
    if (!args.positional.empty()) runtime_fail("dict() takes keyword arguments only here");
    Dict dict;
    for (const auto& [k, v] : args.keyword) dict.set(Value::from_string(k), v);
    return Value::from_dict(dict);
  });
  define("range", [](Renderer&, CallArgs& args) {
    if (!args.keyword.empty() || args.positional.empty() || args.positional.size() > 3)
      runtime_fail("range expected 1 to 3 integer arguments");
    std::vector<int64_t> bounds;
    for (const Value& v : args.positional) bounds.push_back(int_or(v, 0, "range"));
    int64_t start = bounds.size() > 1 ? bounds[0] : 0, stop = bounds.size() > 1 ? bounds[1] : bounds[0];
    int64_t step = bounds.size() > 2 ? bounds[2] : 1;
    if (step == 0) runtime_fail("range() arg 3 must not be zero");
    List out;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
      if (out.size() >= 100000)
        runtime_fail("Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
      out.push_back(Value::from_int(i));
    }
    return Value::from_list(out);
  });
  define("joiner", [](Renderer&, CallArgs& args) {
    Value separator = bind_arguments(args, {"sep"}, "joiner")[0];
    std::string text = separator.is_undefined() ? ", " : to_str(separator);
    auto used = std::make_shared<bool>(false);
    return Value::from_callable("joiner", [text, used](Renderer&, CallArgs&) {
      return Value::from_string(std::exchange(*used, true) ? text : "");
    });
  });
  return globals;
}

}  // namespace

// The parsed template: what JinjaTemplate shares between its copies.
struct Body {
  StmtList statements;
};

}  // namespace grm::jinja

namespace grm {

JinjaTemplate::JinjaTemplate(const std::string& source, std::string name) : name_(std::move(name)) {
  using namespace jinja;
  auto body = std::make_shared<Body>();
  body->statements = Parser(Lexer(source, name_).run(), name_).parse_template();
  body_ = std::move(body);
}

std::string JinjaTemplate::render(const nlohmann::ordered_json& context) const {
  std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  return render(context, local);
}

std::string JinjaTemplate::render(const nlohmann::ordered_json& context, const std::tm& now) const {
  using namespace jinja;
  if (!context.is_object())
    fail("{}: the render context must be a JSON object, got {}", name_, context.type_name());
  Renderer renderer(name_, now);
  std::string output;
  try {
    static const std::shared_ptr<Scope> globals = make_globals();
    auto variables = std::make_shared<Scope>();
    variables->parent = globals;
    for (const auto& [key, value] : context.items()) variables->variables[key] = from_json(value);
    renderer.scope = variables;
    renderer.out = &output;
    execute_all(renderer, body_->statements);
  } catch (const RaisedByTemplate& raised) {
    fail("{}: {}", name_, raised.message);
  } catch (const RuntimeFailure& failure) {
    fail("{}:{}: {}", name_, renderer.line, failure.message);
  }
  return output;
}

}  // namespace grm
