// A Jinja interpreter for Hugging Face chat templates (tokenizer_config.json's chat_template), written to
// render byte-identically to Python jinja2 as transformers' apply_chat_template drives it:
//   ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]), the
//   default Undefined (prints as "", is falsy, iterates as empty; an attribute, item, call or arithmetic
//   on it raises), keep_trailing_newline=False (one trailing newline of the source is dropped), the
//   globals raise_exception(msg) and strftime_now(fmt), and transformers' tojson filter
//   (json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)).
//
// The subset:
//   tags      {{ }} {% %} {# #} with - and + whitespace control; raw, if/elif/else, for (tuple targets,
//             `if` filter, else, loop.index/index0/revindex/revindex0/first/last/length/previtem/nextitem/
//             depth/cycle), break/continue, set (names, tuples, ns.attr, block set with filters), macro
//             (defaults, varargs, kwargs, caller), call blocks, filter blocks, with, generation.
//   exprs     literals (str with Python escapes, int, float, bool, none, list, tuple, dict), and/or/not,
//             comparisons (chained), in / not in, + - * / // % ** ~, unary -/+, a if c else b, a.b, a[b],
//             slices a[i:j:k], calls with keyword arguments, | filters, is [not] tests.
//   filters   abs attr batch capitalize center count d default dictsort e escape first float format indent
//             int items join last length list lower map max min reject rejectattr replace reverse round
//             safe select selectattr sort string sum title tojson trim unique upper wordcount.
//   tests     boolean callable defined divisibleby eq equalto escaped even false filter float ge gt
//             greaterthan in integer iterable le lower lessthan lt mapping ne none number odd sameas
//             sequence string test true undefined upper, and the operator aliases (== != < <= > >=).
//   methods   str: strip lstrip rstrip split rsplit splitlines startswith endswith upper lower title
//             capitalize swapcase center replace format join find rfind count index isdigit isalpha isalnum
//             isspace isupper islower removeprefix removesuffix; dict: items keys values get;
//             list/tuple: count index.
//   globals   range dict namespace joiner raise_exception strftime_now.
// Values print as Python's str() does (True, None, ['a', 1], {'k': 1.0}, 1e-05).
//
// Not supported, each an error at parse time naming the template, the line and the construct: include,
// extends, import, from, block, do, autoescape, trans, recursive loops, *args/**kwargs in calls, and the
// jinja2 filters not listed above. Known differences from CPython: case mapping (upper/lower/title)
// covers ASCII, Latin-1, Greek and Cyrillic; dict.items()/keys()/values() are lists (they print as lists,
// not as dict_items(...)); |safe is the identity (with autoescape off, transformers' setting, Markup only
// differs when concatenated with text needing escapes).
#pragma once

#include <ctime>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

namespace grm {

namespace jinja {
struct Body;
}

// Parsed once, rendered many times; copies share the parsed template.
class JinjaTemplate {
 public:
  // Throws grm::Error "<name>:<line>: <what>" for a syntax error, an unknown tag, filter or test, and
  // "<name>:<line>: unsupported '<construct>'" for the constructs listed above.
  JinjaTemplate(const std::string& source, std::string name);

  // context: an object whose members become the template's variables (messages, add_generation_prompt,
  // bos_token, eos_token, tools, documents, ...). It is an ordered_json because Python dicts keep their
  // insertion order, which |tojson and .items() show; a plain nlohmann::json converts (with sorted keys).
  // A template's raise_exception(msg) throws grm::Error "<name>: <msg>"; other runtime errors (an
  // attribute of an undefined value, a type error) throw grm::Error "<name>:<line>: <what>".
  // strftime_now() reads the local clock, as transformers does.
  std::string render(const nlohmann::ordered_json& context) const;
  // The same with strftime_now() formatting `now` (local time fields): reproducible renders.
  std::string render(const nlohmann::ordered_json& context, const std::tm& now) const;

  const std::string& name() const { return name_; }

 private:
  std::string name_;
  std::shared_ptr<const jinja::Body> body_;
};

}  // namespace grm
