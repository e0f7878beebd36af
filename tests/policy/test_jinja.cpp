// The Jinja interpreter against Python jinja2 as transformers runs it: every case of the chat-template
// fixtures (rendered by jinja2 3.1 with transformers' settings), then small cases worked out by hand (and
// checked against jinja2) for each part of the language the templates lean on.
#include <ctime>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "policy/jinja.hpp"
#include "tests/test_util.hpp"

namespace grm {
namespace {

using nlohmann::ordered_json;

// The fixtures fix strftime_now to 2024-07-26 00:00:00 (a Friday).
std::tm fixture_now() {
  std::tm now{};
  now.tm_year = 2024 - 1900;
  now.tm_mon = 6;
  now.tm_mday = 26;
  now.tm_wday = 5;
  now.tm_yday = 207;
  return now;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string render(const std::string& source, const ordered_json& context = ordered_json::object()) {
  return JinjaTemplate(source, "t").render(context, fixture_now());
}

// Where two renders part, with a little of each around that byte.
std::string first_difference(const std::string& got, const std::string& expected) {
  size_t i = 0;
  while (i < got.size() && i < expected.size() && got[i] == expected[i]) ++i;
  size_t from = i > 30 ? i - 30 : 0;
  return "first differing byte " + std::to_string(i) + ": got " + ordered_json(got.substr(from, 80)).dump() +
         ", expected " + ordered_json(expected.substr(from, 80)).dump();
}

TEST(JinjaFixtures, EveryCaseRendersAsJinja2OrRaisesItsMessage) {
  const std::string directory = shared_path("fixtures/chat_templates");
  // ordered_json: the cases' dicts keep their order, as the Python dicts rendered from them did.
  std::ifstream in(shared_path("fixtures/chat_templates/expected.json"));
  ordered_json cases = ordered_json::parse(in);
  ASSERT_TRUE(cases.is_array());
  ASSERT_FALSE(cases.empty());
  const std::set<std::string> not_context = {"template", "case",   "description",
                                             "rendered", "raises", "error_type"};
  std::map<std::string, JinjaTemplate> templates;
  size_t n_checked = 0;
  for (const auto& record : cases) {
    std::string name = record.at("template");
    std::string label = name + " case " + record.value("case", "?") + " add_generation_prompt=" +
                        record.value("add_generation_prompt", ordered_json()).dump();
    SCOPED_TRACE(label);
    auto found = templates.find(name);
    if (found == templates.end())
      found =
          templates
              .emplace(name, JinjaTemplate(
                                 read_file(shared_path("fixtures/chat_templates/" + name + ".jinja")), name))
              .first;
    ordered_json context = ordered_json::object();
    for (const auto& [key, value] : record.items())
      if (!not_context.count(key)) context[key] = value;
    if (record.contains("raises")) {
      std::string message = error_of([&] { found->second.render(context, fixture_now()); });
      EXPECT_NE(message.find(record["raises"].get<std::string>()), std::string::npos)
          << label << ": expected an error containing " << record["raises"] << ", got \"" << message << "\"";
    } else {
      ASSERT_TRUE(record.contains("rendered")) << label << ": a record needs 'rendered' or 'raises'";
      std::string expected = record["rendered"];
      std::string got;
      try {
        got = found->second.render(context, fixture_now());
      } catch (const Error& error) {
        ADD_FAILURE() << label << ": raised \"" << error.what() << "\"";
        continue;
      }
      EXPECT_TRUE(got == expected) << label << ": " << first_difference(got, expected);
    }
    ++n_checked;
  }
  EXPECT_EQ(n_checked, cases.size());
}

// ------------------------------------------------------------------------------------------ whitespace

TEST(JinjaWhitespace, TrimBlocksDropsTheNewlineAfterABlockTag) {
  EXPECT_EQ(render("{% if true %}\nx{% endif %}\ny"), "xy");
  EXPECT_EQ(render("{% if true +%}\nx{% endif %}"), "\nx");       // + keeps it
  EXPECT_EQ(render("{% if true %}   \nx{% endif %}"), "   \nx");  // only a newline right after the tag
  EXPECT_EQ(render("{# note #}\nz"), "z");
  EXPECT_EQ(render("{{ 'v' }}\nz"), "v\nz");  // not after {{ }}
}

TEST(JinjaWhitespace, LstripBlocksRemovesBlanksBeforeABlockTagAtLineStart) {
  EXPECT_EQ(render("a\n  {% if true %}\nx\n  {% endif %}\ny"), "a\nx\ny");
  EXPECT_EQ(render("  {% if true %}x{% endif %}"), "x");      // the template start is a line start
  EXPECT_EQ(render("a  {% if true %}x{% endif %}"), "a  x");  // text before the tag on its line
  EXPECT_EQ(render("a\n  {%+ if true %}x{% endif %}"), "a\n  x");
  EXPECT_EQ(render("a\n  {{ 1 }}\nz"), "a\n  1\nz");  // not before {{ }}
  EXPECT_EQ(render("\t {# c #}\nz"), "z");
}

TEST(JinjaWhitespace, MinusStripsAllWhitespaceOnItsSide) {
  EXPECT_EQ(render("q  {%- if true %} x {%- endif %} z"), "q x z");
  EXPECT_EQ(render("a\n\t {% if true -%}  \n  \nx{% endif %}"), "a\nx");
  EXPECT_EQ(render("{{- ' a ' -}}   \n {{- ' b ' }}"), " a  b ");
  EXPECT_EQ(render("a {#- c -#} b"), "ab");
}

TEST(JinjaWhitespace, SourceNewlinesAreNormalizedAndOneTrailingNewlineDropped) {
  EXPECT_EQ(render("x\n"), "x");
  EXPECT_EQ(render("x\n\n"), "x\n");
  EXPECT_EQ(render("x\r\ny\rz"), "x\ny\nz");
}

TEST(JinjaWhitespace, RawBodiesAreText) {
  EXPECT_EQ(render("{% raw %}{{ x }}{% endraw %}"), "{{ x }}");
  EXPECT_EQ(render("a\n  {% raw %}\n  {{ x }}\n  {% endraw %}\nb"), "a\n\n  {{ x }}\nb");
}

// ------------------------------------------------------------------------------------------ statements

TEST(JinjaLoops, LoopVariables) {
  EXPECT_EQ(render("{% for i in [1, 2, 3] %}{{ loop.previtem }}-{{ loop.nextitem }}-{{ loop.revindex }}-"
                   "{{ loop.length }}-{{ loop.first }}-{{ loop.last }};{% endfor %}"),
            "-2-3-3-True-False;1-3-2-3-False-False;2--1-3-False-True;");
  EXPECT_EQ(
      render("{% for i in 'ab' %}{{ loop.index }}{{ loop.index0 }}{{ loop.cycle('x', 'y') }}{% endfor %}"),
      "10x21y");
}

TEST(JinjaLoops, FilterElseBreakContinueAndUnpacking) {
  // The `if` filter runs first: loop.length counts the kept items.
  EXPECT_EQ(render("{% for i in [1, 2, 3] if i > 1 %}{{ loop.index }}{{ loop.length }}{% endfor %}"), "1222");
  EXPECT_EQ(render("{% for i in [] %}x{% else %}empty{% endfor %}"), "empty");
  EXPECT_EQ(
      render("{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}{% if i == 5 %}{% break %}"
             "{% endif %}{{ i }}{% endfor %}"),
      "0134");
  EXPECT_EQ(render("{% for k, v in {'x': 1, 'y': 2}.items() %}{{ k }}={{ v }};{% endfor %}"), "x=1;y=2;");
  EXPECT_EQ(render("{% for k in {'x': 1, 'y': 2} %}{{ k }}{% endfor %}"), "xy");
}

TEST(JinjaLoops, SetInsideALoopStaysInItsIteration) {
  EXPECT_EQ(render("{% set a = 5 %}{% for x in [1, 2] %}{{ a }}{% set a = x %}{{ a }}{% endfor %}{{ a }}"),
            "51525");
}

TEST(JinjaNamespace, AttributesAssignedInALoopSurviveIt) {
  EXPECT_EQ(render("{% set ns = namespace(total=1) %}{% for x in [1, 2] %}{% set ns.total = ns.total + x %}"
                   "{% endfor %}{{ ns.total }}"),
            "4");
  EXPECT_EQ(render("{% set ns = namespace() %}{% set ns.items = [1] %}{{ ns }}"),
            "<Namespace {'items': [1]}>");
  EXPECT_NE(error_of([] { render("{% set d = {} %}{% set d.x = 1 %}"); }).find("non-namespace"),
            std::string::npos);
}

TEST(JinjaMacros, DefaultsVarargsKwargsRecursionAndCaller) {
  EXPECT_EQ(render("{% macro m(a, b=a + 1) %}{{ a }}{{ b }}{% endmacro %}{{ m(1) }}|{{ m(b=7, a=2) }}"),
            "12|27");
  EXPECT_EQ(render("{% macro m(a) %}{{ a }}{{ varargs }}{{ kwargs }}{% endmacro %}{{ m(1, 3, z=5) }}"),
            "1(3,){'z': 5}");
  EXPECT_EQ(render("{% macro f(n) %}{% if n > 0 %}{{ n }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(4) }}"),
            "4321");
  EXPECT_EQ(render("{% macro w() %}<{{ caller(3) }}>{% endmacro %}{% call(x) w() %}in{{ x }}{% endcall %}"),
            "<in3>");
  // A macro sees its defining scope as it is at the call, and its own sets stay inside it.
  EXPECT_EQ(render("{% macro m() %}{% set x = 9 %}{{ y }}{% endmacro %}{% set x = 1 %}{% set y = 2 %}{{ m() "
                   "}}{{ x }}"),
            "21");
  EXPECT_NE(
      error_of([] { render("{% macro m(x) %}{% endmacro %}{{ m(1, 2) }}"); }).find("takes not more than 1"),
      std::string::npos);
}

TEST(JinjaStatements, SetForms) {
  EXPECT_EQ(render("{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set t = 1, 2 %}{{ t }}"), "12(1, 2)");
  EXPECT_EQ(render("{%- set x %}  hi {% endset %}[{{ x }}]"), "[  hi ]");
  EXPECT_EQ(render("{% set x | upper %}hi{% endset %}{{ x }}"), "HI");
  EXPECT_EQ(render("{% filter upper %}ab{{ 'c' }}{% endfilter %}"), "ABC");
  EXPECT_EQ(render("{% with a = 1 %}{{ a }}{% endwith %}[{{ a }}]"), "1[]");
}

// ------------------------------------------------------------------------------------------ expressions

TEST(JinjaPrinting, ValuesPrintAsPythonStr) {
  EXPECT_EQ(
      render(
          "{{ true }} {{ none }} {{ 1.0 }} {{ 1e20 }} {{ 1e15 }} {{ 0.0001 }} {{ 0.00001 }} {{ 0.1 + 0.2 }}"),
      "True None 1.0 1e+20 1000000000000000.0 0.0001 1e-05 0.30000000000000004");
  EXPECT_EQ(render("{{ [1, 'a', none, true, 1.5, ('x',), {'k': 'v\\n'}] }}"),
            "[1, 'a', None, True, 1.5, ('x',), {'k': 'v\\n'}]");
  EXPECT_EQ(render("{{ [\"it's\", 'a\"b', 'x\\'y\"z'] }}"), "[\"it's\", 'a\"b', 'x\\'y\"z']");
  EXPECT_EQ(render("{{ messages[0] }}", {{"messages", {{{"role", "user"}, {"content", "hi"}}}}}),
            "{'role': 'user', 'content': 'hi'}");
}

TEST(JinjaOperators, PythonSemantics) {
  EXPECT_EQ(
      render("{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 4 / 2 }} {{ 2 ** 10 }} {{ 2 ** -1 }}"),
      "3 -4 2 3.5 2.0 1024 0.5");
  EXPECT_EQ(
      render("{{ 1 ~ 2 }} {{ 'a' ~ none }} {{ 'a' * 3 }} {{ [1] + [2] }} {{ 'x' + 'y' }} {{ true + 1 }}"),
      "12 aNone aaa [1, 2] xy 2");
  EXPECT_EQ(
      render("{{ 1 and 2 }} {{ 0 and 2 }} {{ none or 'x' }} {{ not 1 }} {{ 1 < 2 < 3 }} {{ 1 == 1.0 }}"),
      "2 0 x False True True");
  EXPECT_EQ(render("{{ 'a' if 0 else 'b' }} [{{ 'a' if 0 }}] {{ 'ab' in 'cabd' }} {{ 3 not in [1] }}"),
            "b [] True True");
  EXPECT_EQ(
      render(
          "{{ 'abc'[::-1] }} {{ [1, 2, 3][-1] }} {{ [1, 2, 3, 4][1:] }} {{ 'héllo'[1:3] }} [{{ 'abc'[5] }}]"),
      "cba 3 [2, 3, 4] él []");
  EXPECT_EQ(render("{{ '%s and %r' % ('a', 'b') }} {{ '{} {x}'.format(1, x=2) }}"), "a and 'b' 1 2");
  EXPECT_NE(error_of([] { render("{{ 'x' + 1 }}"); }).find("can only concatenate str (not \"int\") to str"),
            std::string::npos);
}

TEST(JinjaLookups, AttributesItemsAndMethods) {
  ordered_json context = {{"message", {{"role", "user"}, {"content", "  Hi there  "}, {"items", 3}}}};
  EXPECT_EQ(
      render("{{ message.role }}|{{ message['role'] }}|{{ message.content.strip() }}|{{ message['items'] }}",
             context),
      "user|user|Hi there|3");
  EXPECT_EQ(
      render("{{ message.get('missing', 'd') }} {{ message.keys() | list | length }} {{ 'a,b'.split(',') }}",
             context),
      "d 3 ['a', 'b']");
  EXPECT_EQ(
      render("[{{ message.missing }}] {{ message.missing is defined }} {{ none.x is defined }}", context),
      "[] False False");
}

TEST(JinjaUndefined, PrintsEmptyIsFalsyAndRaisesWhenUsed) {
  EXPECT_EQ(render("[{{ nothing }}] {{ nothing is defined }} {% if nothing %}yes{% else %}no{% endif %} {{ "
                   "nothing | length }}"),
            "[] False no 0");
  EXPECT_EQ(render("{{ nothing | default('d') }}{% for x in nothing %}x{% endfor %}"), "d");
  EXPECT_EQ(error_of([] { render("line one\n{{ nothing.attribute }}"); }), "t:2: 'nothing' is undefined");
}

TEST(JinjaFilters, StringFilters) {
  EXPECT_EQ(
      render("{{ '  hi  ' | trim }}|{{ 'xxhixx' | trim('x') }}|{{ 'Héllo' | upper }}|{{ 'ÀB' | lower }}"),
      "hi|hi|HÉLLO|àb");
  // |title capitalizes words after spaces and dashes; str.title() after any non-letter.
  EXPECT_EQ(
      render(
          "{{ \"they're bill's-x\" | title }}|{{ \"they're bill's\".title() }}|{{ 'hELLO' | capitalize }}"),
      "They're Bill's-X|They'Re Bill'S|Hello");
  EXPECT_EQ(render("{{ 'a\\nb\\n' | indent(2) }}|{{ 'a\\n\\nb' | indent(2, true) }}|{{ 'a\\n\\nb' | "
                   "indent(2, blank=true) }}"),
            "a\n  b\n|  a\n\n  b|a\n  \n  b");
  EXPECT_EQ(
      render(
          "{{ 'aXbXc' | replace('X', '-') }} {{ 'héllo' | length }} {{ 'ab' | reverse }} {{ 3 | string }}"),
      "a-b-c 5 ba 3");
}

TEST(JinjaFilters, SequenceFilters) {
  ordered_json context = {{"messages",
                           {{{"role", "user"}, {"content", "a"}},
                            {{"role", "assistant"}, {"content", "b"}},
                            {{"role", "user"}, {"content", "c"}}}}};
  EXPECT_EQ(
      render("{{ messages | selectattr('role', 'equalto', 'user') | map(attribute='content') | join(',') }}",
             context),
      "a,c");
  EXPECT_EQ(render("{{ messages | rejectattr('role', 'equalto', 'user') | list | length }}", context), "1");
  EXPECT_EQ(
      render("{{ [1, 2, 3, 4] | select('odd') | list }} {{ ['a', 'b'] | reject('equalto', 'a') | list }}"),
      "[1, 3] ['b']");
  EXPECT_EQ(render("{{ [3, 1, 2] | sort }} {{ {'b': 1, 'a': 2} | dictsort }} {{ [1, 2] | first }} {{ [1, 2] "
                   "| last }}"),
            "[1, 2, 3] [('a', 2), ('b', 1)] 1 2");
  EXPECT_EQ(render("{{ {'a': 1} | items | list }} {{ [1, 2, 3] | sum }} {{ [3, 1] | max }} {{ ['x', 'X'] | "
                   "unique | list }}"),
            "[('a', 1)] 6 3 ['x']");
  EXPECT_EQ(
      render(
          "{{ 2.5 | round }} {{ 2.675 | round(2) }} {{ '4.5' | int }} {{ 'x' | int }} {{ '2.5' | float }}"),
      "2.0 2.67 4 0 2.5");
}

TEST(JinjaFilters, TojsonIsTransformersJsonDumps) {
  ordered_json context = {{"tool", {{"name", "f"}, {"parameters", {{"b", 1}, {"a", {true, nullptr, 1.5}}}}}}};
  // Insertion order kept, ensure_ascii off, Python's separators; with indent items end in ",".
  EXPECT_EQ(render("{{ tool | tojson }}", context),
            "{\"name\": \"f\", \"parameters\": {\"b\": 1, \"a\": [true, null, 1.5]}}");
  EXPECT_EQ(render("{{ {'a': [1, {}], 'c': 'é\\n'} | tojson(indent=2) }}"),
            "{\n  \"a\": [\n    1,\n    {}\n  ],\n  \"c\": \"é\\n\"\n}");
  EXPECT_EQ(render("{{ {'b': 1, 'a': 2} | tojson(sort_keys=true) }} {{ 'é' | tojson(true) }}"),
            "{\"a\": 2, \"b\": 1} \"\\u00e9\"");
  EXPECT_NE(error_of([] { render("{{ nothing | tojson }}"); }).find("not JSON serializable"),
            std::string::npos);
}

TEST(JinjaTests, IsTests) {
  EXPECT_EQ(
      render("{{ 5 is odd }} {{ 4 is even }} {{ 9 is divisibleby 3 }} {{ x is defined }} {{ none is none }} "
             "{{ 'a' is string }} {{ 1 is number }} {{ {} is mapping }} {{ 'a' is iterable }} {{ 1 is "
             "iterable }} "
             "{{ true is true }} {{ 1 is true }} {{ 2 is in [1, 2] }} {{ 'a' is not string }}"),
      "True True True False True True True True True False True False True False");
}

TEST(JinjaGlobals, RaiseExceptionStrftimeNowRangeNamespace) {
  EXPECT_EQ(error_of([] {
              JinjaTemplate("{{ raise_exception('Roles must alternate') }}", "gemma")
                  .render(ordered_json::object());
            }),
            "gemma: Roles must alternate");
  EXPECT_EQ(render("{{ strftime_now('%d %b %Y') }} {{ strftime_now('%Y-%m-%d') }}"),
            "26 Jul 2024 2024-07-26");
  EXPECT_EQ(render("{{ range(3) | list }} {{ range(5, 0, -2) | list }} {{ dict(a=1) }}"),
            "[0, 1, 2] [5, 3, 1] {'a': 1}");
}

// ------------------------------------------------------------------------------------------ errors

TEST(JinjaErrors, UnsupportedConstructsNameTheTemplateLineAndConstruct) {
  EXPECT_EQ(error_of([] { JinjaTemplate("text\n{% include 'other.jinja' %}", "tmpl"); }),
            "tmpl:2: unsupported 'include'");
  EXPECT_EQ(error_of([] { JinjaTemplate("{% extends 'base' %}", "tmpl"); }), "tmpl:1: unsupported 'extends'");
  EXPECT_EQ(error_of([] { JinjaTemplate("\n\n{% import 'm' as m %}", "tmpl"); }),
            "tmpl:3: unsupported 'import'");
  EXPECT_EQ(error_of([] { JinjaTemplate("{% for x in y recursive %}{% endfor %}", "tmpl"); }),
            "tmpl:1: unsupported 'recursive'");
  EXPECT_EQ(error_of([] { JinjaTemplate("{{ x | urlize }}", "tmpl"); }),
            "tmpl:1: unsupported filter 'urlize'");
}

TEST(JinjaErrors, SyntaxErrorsNameTheTemplateAndLine) {
  EXPECT_EQ(error_of([] { JinjaTemplate("{% if x %}\nopen", "tmpl"); }),
            "tmpl:1: 'if' is never closed: expected 'endif'");
  EXPECT_EQ(error_of([] { JinjaTemplate("a\n{% endfor %}", "tmpl"); }), "tmpl:2: unknown tag 'endfor'");
  EXPECT_EQ(error_of([] { JinjaTemplate("{{ x | nosuchfilter }}", "tmpl"); }),
            "tmpl:1: no filter named 'nosuchfilter'");
  EXPECT_EQ(error_of([] { JinjaTemplate("{{ x is nosuchtest }}", "tmpl"); }),
            "tmpl:1: no test named 'nosuchtest'");
  EXPECT_EQ(error_of([] { JinjaTemplate("{{ (1 + }}", "tmpl"); }), "tmpl:1: unexpected '}'");
  EXPECT_EQ(error_of([] { JinjaTemplate("{% break %}", "tmpl"); }), "tmpl:1: 'break' outside of a loop");
  EXPECT_EQ(error_of([] { JinjaTemplate("{{ 'open", "tmpl"); }), "tmpl:1: unexpected end of string");
}

TEST(JinjaErrors, RuntimeErrorsNameTheLineAndTheContextMustBeAnObject) {
  EXPECT_EQ(error_of([] { render("a\nb\n{{ [1] < 'x' }}"); }),
            "t:3: '<' not supported between instances of 'list' and 'str'");
  EXPECT_EQ(error_of([] { JinjaTemplate("x", "tmpl").render(ordered_json::array()); }),
            "tmpl: the render context must be a JSON object, got array");
}

}  // namespace
}  // namespace grm
