#include "policy/chat_template.hpp"

#include <algorithm>
#include <array>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "core/error.hpp"
#include "core/text_io.hpp"
#include "policy/tokenizer/tokenizer.hpp"

namespace grm {
namespace {

constexpr std::array<std::pair<std::string_view, ChatTemplate>, 5> kTemplates = {{
    {"plain", ChatTemplate::plain},
    {"chatml", ChatTemplate::chatml},
    {"llama3", ChatTemplate::llama3},
    {"gemma", ChatTemplate::gemma},
    {"mistral", ChatTemplate::mistral},
}};

// Jinja's `trim`, which the Llama-3 and Gemma templates apply to every message.
std::string trim(const std::string& text) {
  const char* space = " \t\n\r\f\v";
  size_t begin = text.find_first_not_of(space);
  if (begin == std::string::npos) return "";
  return text.substr(begin, text.find_last_not_of(space) + 1 - begin);
}

struct TurnMarkers {
  std::string before, after;
};

TurnMarkers turn_markers(ChatTemplate chat_template, const std::string& role) {
  switch (chat_template) {
    case ChatTemplate::plain:
      if (role == "user") return {"\n\nHuman: ", ""};
      if (role == "assistant") return {"\n\nAssistant: ", ""};
      return {"", ""};  // a system prompt is plain text before the first turn
    case ChatTemplate::chatml:
      return {"<|im_start|>" + role + "\n", "<|im_end|>\n"};
    case ChatTemplate::llama3:
      return {"<|start_header_id|>" + role + "<|end_header_id|>\n\n", "<|eot_id|>"};
    case ChatTemplate::gemma:
      return {"<start_of_turn>" + std::string(role == "assistant" ? "model" : "user") + "\n",
              "<end_of_turn>\n"};
    case ChatTemplate::mistral:
      if (role == "assistant") return {"", "</s>"};
      return {"[INST] ", " [/INST]"};
  }
  return {"", ""};
}

std::string generation_header(ChatTemplate chat_template) {
  switch (chat_template) {
    case ChatTemplate::plain:
      return "\n\nAssistant:";  // the response then starts with its space
    case ChatTemplate::chatml:
      return "<|im_start|>assistant\n";
    case ChatTemplate::llama3:
      return "<|start_header_id|>assistant<|end_header_id|>\n\n";
    case ChatTemplate::gemma:
      return "<start_of_turn>model\n";
    case ChatTemplate::mistral:
      return "";  // the prompt already ends with [/INST]
  }
  return "";
}

std::optional<std::string> read_file_if_exists(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return std::nullopt;
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// The Jinja source of the model's chat template: tokenizer_config.json's chat_template (a string, or a
// list of {name, template} whose "default" is taken), else chat_template.jinja or chat_template.json.
std::string chat_template_source(const std::filesystem::path& dir, const nlohmann::json* config) {
  if (config && config->is_object() && config->contains("chat_template")) {
    const auto& value = (*config)["chat_template"];
    if (value.is_string()) return value.get<std::string>();
    if (value.is_array()) {
      for (const auto& entry : value)
        if (entry.is_object() && entry.value("name", "") == "default" && entry.contains("template"))
          return entry["template"].get<std::string>();
      if (!value.empty() && value[0].is_object() && value[0].contains("template"))
        return value[0]["template"].get<std::string>();
    }
  }
  if (auto jinja = read_file_if_exists(dir / "chat_template.jinja")) return *jinja;
  if (auto json = read_json_file_if_exists((dir / "chat_template.json").string()))
    if (json->is_object() && json->contains("chat_template") && (*json)["chat_template"].is_string())
      return (*json)["chat_template"].get<std::string>();
  return "";
}

}  // namespace

ModelChatTemplate read_model_chat_template(const std::string& model_dir) {
  std::filesystem::path dir = model_dir;
  auto config = read_json_file_if_exists((dir / "tokenizer_config.json").string());
  ModelChatTemplate out;
  out.source = chat_template_source(dir, config ? &*config : nullptr);
  bool in_config = config && config->is_object() && config->contains("chat_template");
  out.name = (dir / (in_config                                              ? "tokenizer_config.json"
                     : std::filesystem::exists(dir / "chat_template.jinja") ? "chat_template.jinja"
                                                                            : "chat_template.json"))
                 .string();
  auto token = [&](const char* key) -> std::string {
    if (!config || !config->is_object() || !config->contains(key)) return "";
    const auto& value = (*config)[key];
    if (value.is_string()) return value.get<std::string>();
    if (value.is_object() && value.contains("content") && value["content"].is_string())
      return value["content"].get<std::string>();
    return "";
  };
  out.bos_token = token("bos_token");
  out.eos_token = token("eos_token");
  return out;
}

ChatTemplate chat_template_from_name(std::string_view name) {
  for (const auto& [known, value] : kTemplates)
    if (known == name) return value;
  fail("unknown chat template \"{}\"; choose one of plain, chatml, llama3, gemma, mistral", name);
}

std::string_view chat_template_name(ChatTemplate chat_template) {
  for (const auto& [name, value] : kTemplates)
    if (value == chat_template) return name;
  return "plain";
}

ChatTemplate infer_chat_template(const std::string& model_dir) {
  std::filesystem::path dir = model_dir;
  auto config = read_json_file_if_exists((dir / "tokenizer_config.json").string());
  std::string source = chat_template_source(dir, config ? &*config : nullptr);
  // Markers that only one of the template families writes.
  if (source.find("<|im_start|>") != std::string::npos) return ChatTemplate::chatml;
  if (source.find("<|start_header_id|>") != std::string::npos) return ChatTemplate::llama3;
  if (source.find("<start_of_turn>") != std::string::npos) return ChatTemplate::gemma;
  if (source.find("[INST]") != std::string::npos) return ChatTemplate::mistral;
  std::string tokenizer_class = config && config->is_object() ? config->value("tokenizer_class", "") : "";
  if (tokenizer_class.rfind("Qwen2Tokenizer", 0) == 0) return ChatTemplate::chatml;
  if (tokenizer_class.rfind("GemmaTokenizer", 0) == 0) return ChatTemplate::gemma;
  return ChatTemplate::plain;  // a base model (e.g. TinyStories' LlamaTokenizer without a template)
}

FormattedChat format_chat(ChatTemplate chat_template, const std::vector<ChatMessage>& input,
                          bool add_generation_prompt) {
  std::vector<ChatMessage> messages = input;
  for (size_t i = 0; i < messages.size(); ++i) {
    const auto& role = messages[i].role;
    if (role != "system" && role != "user" && role != "assistant")
      fail("chat message {} has role \"{}\"; roles are system, user and assistant", i, role);
    bool joins_user_turn = chat_template == ChatTemplate::gemma || chat_template == ChatTemplate::mistral;
    if (role == "system" && joins_user_turn && i > 0)
      fail("chat message {}: the {} template takes a system message only first", i,
           chat_template_name(chat_template));
  }
  // Gemma and Mistral have no system turn: the system text opens the first user message.
  if ((chat_template == ChatTemplate::gemma || chat_template == ChatTemplate::mistral) && !messages.empty() &&
      messages[0].role == "system") {
    if (messages.size() > 1 && messages[1].role == "user") {
      messages[1].content = messages[0].content + "\n\n" + messages[1].content;
      messages.erase(messages.begin());
    } else {
      messages[0].role = "user";
    }
  }
  bool trims = chat_template == ChatTemplate::llama3 || chat_template == ChatTemplate::gemma;
  bool ends_in_response = !add_generation_prompt && !messages.empty() && messages.back().role == "assistant";
  FormattedChat chat;
  for (size_t i = 0; i < messages.size(); ++i) {
    bool is_response = ends_in_response && i + 1 == messages.size();
    TurnMarkers markers = turn_markers(chat_template, messages[i].role);
    chat.text += markers.before;
    if (is_response) chat.response_begin = chat.text.size();
    chat.text += trims ? trim(messages[i].content) : messages[i].content;
    if (is_response) chat.response_end = chat.text.size();
    chat.text += markers.after;
  }
  if (add_generation_prompt) chat.text += generation_header(chat_template);
  if (!ends_in_response) chat.response_begin = chat.response_end = chat.text.size();
  return chat;
}

TokenizedResponse tokenize_prompt_response(const Tokenizer& tokenizer, std::string_view prompt,
                                           std::string_view response, bool add_special_tokens) {
  std::string full = std::string(prompt) + std::string(response);
  std::vector<int64_t> prompt_ids = tokenizer.encode(prompt, false);
  std::vector<int64_t> plain = tokenizer.encode(full, false);
  size_t shared = std::mismatch(prompt_ids.begin(), prompt_ids.end(), plain.begin(), plain.end()).first -
                  prompt_ids.begin();
  if (!add_special_tokens) return {std::move(plain), shared};
  // The post-processor only puts special ids before and after the text; find how many went before.
  std::vector<int64_t> ids = tokenizer.encode(full, true);
  for (size_t prefix = 0; prefix + plain.size() <= ids.size(); ++prefix)
    if (std::equal(plain.begin(), plain.end(), ids.begin() + long(prefix)))
      return {std::move(ids), prefix + shared};
  fail(
      "tokenize_prompt_response: the tokenizer's special tokens do not frame the text; encode it without "
      "them");
}

}  // namespace grm
