// `grm chat-template` prints exactly what apply_chat_template(tokenize=False) gives: the first case of
// every fixture template, through --template, and a model directory's own template and tokens.
#include <cstdio>
#include <filesystem>
#include <set>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/atomic_file.hpp"
#include "tests/test_util.hpp"

namespace fs = std::filesystem;
using nlohmann::ordered_json;

namespace {

std::string quoted(const std::string& text) {
  return "'" + text + "'";  // the fixture tokens hold no single quotes
}

TEST(ChatTemplateCli, PrintsTheFirstCaseOfEveryFixtureTemplateExactly) {
  auto dir = temp_dir("chat_template_cli");
  std::string fixtures = shared_path("fixtures/chat_templates");
  ordered_json cases = ordered_json::parse(grm::read_file(fixtures + "/expected.json"));
  std::set<std::string> seen;
  for (const auto& c : cases) {
    std::string name = c["template"];
    std::string source = grm::read_file(fixtures + "/" + name + ".jinja");
    // strftime_now reads today's date here; the fixtures fixed theirs.
    if (!c.contains("rendered") || seen.count(name) || source.find("strftime_now") != std::string::npos)
      continue;
    seen.insert(name);
    ordered_json context = ordered_json::object();
    for (const auto& [key, value] : c.items())
      if (key != "template" && key != "case" && key != "description" && key != "rendered" &&
          key != "bos_token" && key != "eos_token" && key != "add_generation_prompt")
        context[key] = value;
    grm::write_file_atomic((dir / "messages.json").string(), context.dump());
    std::string command = std::string(GRM_BINARY) + " chat-template --template " + fixtures + "/" + name +
                          ".jinja --messages " + (dir / "messages.json").string() + " --bos-token " +
                          quoted(c.value("bos_token", "")) + " --eos-token " +
                          quoted(c.value("eos_token", "")) +
                          (c.value("add_generation_prompt", false) ? " --add-generation-prompt" : "");
    auto [out, status] = run_command(command);
    EXPECT_EQ(status, 0) << name;
    EXPECT_EQ(out, c["rendered"].get<std::string>()) << name;
  }
  EXPECT_GE(seen.size(), 10u);  // most fixture templates do not read the date
  fs::remove_all(dir);
}

TEST(ChatTemplateCli, ReadsTheModelsTemplateAndTokensAndNamesMissingOnes) {
  auto dir = temp_dir("chat_template_model");
  grm::write_file_atomic((dir / "model/tokenizer_config.json").string(),
                         ordered_json({{"chat_template",
                                        "{{ bos_token }}{% for m in messages %}<{{ m.role }}>"
                                        "{{ m.content }}{{ eos_token }}{% endfor %}"
                                        "{% if add_generation_prompt %}<assistant>{% endif %}"},
                                       {"bos_token", {{"content", "<s>"}, {"lstrip", false}}},
                                       {"eos_token", "</s>"}})
                             .dump());
  grm::write_file_atomic((dir / "m.json").string(), R"([{"role": "user", "content": "Hi"}])");
  auto [out, status] =
      run_command(std::string(GRM_BINARY) + " chat-template --model " + (dir / "model").string() +
                  " --messages " + (dir / "m.json").string() + " --add-generation-prompt");
  EXPECT_EQ(status, 0);
  EXPECT_EQ(out, "<s><user>Hi</s><assistant>");
  // A model without a template, and a template that raises: clear errors, non-zero exits.
  fs::remove((dir / "model/tokenizer_config.json"));
  EXPECT_NE(run_command(std::string(GRM_BINARY) + " chat-template --model " + (dir / "model").string() +
                        " --messages " + (dir / "m.json").string() + " 2>&1")
                .first.find("has no chat template"),
            std::string::npos);
  grm::write_file_atomic((dir / "raise.jinja").string(), "{{ raise_exception('Only user turns here') }}");
  auto [error, code] =
      run_command(std::string(GRM_BINARY) + " chat-template --template " + (dir / "raise.jinja").string() +
                  " --messages " + (dir / "m.json").string() + " 2>&1");
  EXPECT_NE(code, 0);
  EXPECT_NE(error.find("Only user turns here"), std::string::npos) << error;
  fs::remove_all(dir);
}

}  // namespace
