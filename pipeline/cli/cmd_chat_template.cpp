// `grm chat-template`: the exact text a chat model sees for a conversation, rendered from the model's own
// Jinja template (policy/jinja.hpp) as transformers' apply_chat_template(tokenize=False) renders it.
#include <cstdio>
#include <memory>
#include <optional>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "core/atomic_file.hpp"
#include "core/error.hpp"
#include "pipeline/cli/commands.hpp"
#include "policy/chat_template.hpp"
#include "policy/jinja.hpp"

namespace grm {
namespace {

struct ChatTemplateCommand {
  std::string model_dir, template_file, messages_file;
  bool add_generation_prompt = false;
  std::optional<std::string> bos_token, eos_token;  // given: instead of the model's
};

// The messages file holds a list of messages, or an object with "messages" and any other variables the
// template reads (tools, documents, ...), in the order written.
nlohmann::ordered_json read_context(const std::string& path) {
  nlohmann::ordered_json value = nlohmann::ordered_json::parse(read_file(path), nullptr, false);
  if (value.is_discarded())
    fail("{}: not valid JSON; give a list of {{\"role\", \"content\"}} messages", path);
  if (value.is_array()) return nlohmann::ordered_json{{"messages", value}};
  if (!value.is_object() || !value.contains("messages"))
    fail("{}: expected a list of messages or an object with \"messages\"", path);
  return value;
}

void run_chat_template(const ChatTemplateCommand& cmd) {
  if (cmd.model_dir.empty() == cmd.template_file.empty())
    fail("chat-template: pass exactly one of --model DIR and --template FILE.jinja");
  ModelChatTemplate model;
  if (!cmd.model_dir.empty()) {
    model = read_model_chat_template(cmd.model_dir);
    if (model.source.empty())
      fail(
          "{}: the model has no chat template (no chat_template in tokenizer_config.json, no "
          "chat_template.jinja); pass --template FILE.jinja",
          cmd.model_dir);
  } else {
    model.source = read_file(cmd.template_file);
    model.name = cmd.template_file;
  }
  nlohmann::ordered_json context = read_context(cmd.messages_file);
  context["add_generation_prompt"] = cmd.add_generation_prompt;
  context["bos_token"] = cmd.bos_token.value_or(model.bos_token);
  context["eos_token"] = cmd.eos_token.value_or(model.eos_token);
  std::string text = JinjaTemplate(model.source, model.name).render(context);
  std::fwrite(text.data(), 1, text.size(), stdout);  // exactly: no newline added
}

}  // namespace

void add_chat_template_command(CLI::App& app) {
  auto cmd = std::make_shared<ChatTemplateCommand>();
  auto* sub = app.add_subcommand(
      "chat-template",
      "Render a conversation with a chat template, exactly as transformers' apply_chat_template");
  sub->add_option("--model", cmd->model_dir, "model directory (tokenizer_config.json's chat_template)");
  sub->add_option("--template", cmd->template_file, "a Jinja template file instead");
  sub->add_option("--messages", cmd->messages_file,
                  "JSON: a list of {role, content}, or {messages, tools, ...}")
      ->required();
  sub->add_flag("--add-generation-prompt", cmd->add_generation_prompt, "end with the assistant's header");
  sub->add_option("--bos-token", cmd->bos_token, "bos_token (default: the model's)");
  sub->add_option("--eos-token", cmd->eos_token, "eos_token (default: the model's)");
  sub->callback([cmd] { run_chat_template(*cmd); });
}

}  // namespace grm
