#include "policy/chat_format.hpp"

#include <algorithm>
#include <cctype>
#include <filesystem>

#include "core/atomic_file.hpp"
#include "core/error.hpp"
#include "core/text_io.hpp"
#include "policy/jinja.hpp"
#include "policy/tokenizer/tokenizer.hpp"

namespace grm {
namespace {

bool starts_with(std::string_view text, std::string_view prefix) {
  return text.size() >= prefix.size() && text.compare(0, prefix.size(), prefix) == 0;
}

std::string_view trimmed(std::string_view text) {
  const char* space = " \t\n\r\f\v";
  size_t begin = text.find_first_not_of(space);
  if (begin == std::string_view::npos) return {};
  return text.substr(begin, text.find_last_not_of(space) + 1 - begin);
}

// The turn markers of the interchange layout (rm/preference_data.cpp writes them).
struct TurnMarker {
  std::string_view text, role;
};
constexpr TurnMarker kTurnMarkers[] = {
    {"\n\nHuman:", "user"}, {"\n\nAssistant:", "assistant"}, {"\n\nSystem:", "system"}};

// Where the next turn marker at or after `from` starts, and which one.
std::pair<size_t, const TurnMarker*> next_turn(std::string_view text, size_t from) {
  std::pair<size_t, const TurnMarker*> best{std::string_view::npos, nullptr};
  for (const auto& marker : kTurnMarkers) {
    size_t at = text.find(marker.text, from);
    if (at < best.first) best = {at, &marker};
  }
  return best;
}

// The interchange layout of messages (as rm/preference_data.cpp flattens them): the prompt ends with the
// generation header "\n\nAssistant:", the response is " " + content.
std::string transcript_text(const std::vector<ChatMessage>& messages) {
  std::string text;
  for (const auto& m : messages)
    text += (m.role == "assistant" ? "\n\nAssistant: "
             : m.role == "system"  ? "\n\nSystem: "
                                   : "\n\nHuman: ") +
            m.content;
  return text;
}

}  // namespace

std::vector<ChatMessage> transcript_messages(std::string_view prompt) {
  auto [at, marker] = next_turn(prompt, 0);
  if (!marker) return {{"user", std::string(prompt)}};
  std::vector<ChatMessage> messages;
  if (!trimmed(prompt.substr(0, at)).empty())
    messages.push_back({"system", std::string(prompt.substr(0, at))});
  while (marker) {
    size_t begin = at + marker->text.size();
    if (begin < prompt.size() && prompt[begin] == ' ') ++begin;  // the layout's space after the colon
    auto [next, next_marker] = next_turn(prompt, begin);
    std::string content(
        prompt.substr(begin, next == std::string_view::npos ? std::string_view::npos : next - begin));
    bool generation_header = !next_marker && marker->role == "assistant" && trimmed(content).empty();
    if (!generation_header) messages.push_back({std::string(marker->role), std::move(content)});
    at = next;
    marker = next_marker;
  }
  return messages;
}

ChatFormat ChatFormat::resolve(const ChatFormatConfig& config, const std::string& model_dir,
                               const Tokenizer& tokenizer, const std::string& where) {
  ChatFormat format;
  format.append_eos_ = config.append_eos;
  if (config.append_eos != "auto" && config.append_eos != "true" && config.append_eos != "false")
    fail("{}: append_eos must be auto, true or false, not \"{}\"", where, config.append_eos);
  if (tokenizer.eos_id) format.tokenizer_eos_ = tokenizer.decode({*tokenizer.eos_id}, false);
  if (tokenizer.bos_id) format.tokenizer_bos_ = tokenizer.decode({*tokenizer.bos_id}, false);
  if (config.append_eos == "true" && !tokenizer.eos_id)
    fail("{}: append_eos is true but the tokenizer of {} has no EOS token; set append_eos: auto", where,
         model_dir);
  const std::string& name = config.chat_template;
  auto use_jinja = [&](const std::string& source, const std::string& source_name) {
    ModelChatTemplate model = read_model_chat_template(model_dir);
    format.kind_ = Kind::jinja;
    format.jinja_source_ = source;
    format.jinja_name_ = source_name;
    format.bos_token_ = !model.bos_token.empty() || !tokenizer.bos_id
                            ? model.bos_token
                            : tokenizer.decode({*tokenizer.bos_id}, false);
    format.eos_token_ = !model.eos_token.empty() ? model.eos_token : format.tokenizer_eos_;
    try {
      format.jinja_ = std::make_shared<const JinjaTemplate>(source, source_name);
    } catch (const std::exception& e) {
      fail("{}: {}", where, e.what());
    }
  };
  if (name == "none") {
  } else if (name == "auto") {
    ModelChatTemplate model = read_model_chat_template(model_dir);
    if (!model.source.empty()) use_jinja(model.source, model.name);
  } else if (name.size() > 6 && name.compare(name.size() - 6, 6, ".jinja") == 0) {
    std::filesystem::path file = name;
    if (file.is_relative() && std::filesystem::exists(std::filesystem::path(model_dir) / file))
      file = std::filesystem::path(model_dir) / file;
    if (!std::filesystem::exists(file))
      fail("{}: the chat template file {} does not exist (relative names are looked up in {} first)", where,
           name, model_dir);
    use_jinja(read_file(file.string()), file.string());
  } else {
    try {
      format.family_ = chat_template_from_name(name);
    } catch (const std::exception& e) {
      fail("{}: {}; or auto, none, or a .jinja file", where, e.what());
    }
    format.kind_ = Kind::family;
  }
  format.learn_end_of_turn();
  return format;
}

void ChatFormat::learn_end_of_turn() {
  end_of_turn_.clear();
  if (kind_ == Kind::none) return;
  // What follows a one-word answer is the template's end of turn. A template that refuses this simple
  // chat raises again, with its own message, on the chats it is given.
  try {
    ChatFormat copy = *this;
    copy.append_eos_ = "auto";
    ChatText text = copy.render_messages({{"user", "Hi"}, {"assistant", "Yes"}}, true);
    size_t at = text.response.find("Yes");
    if (at != std::string::npos) end_of_turn_ = text.response.substr(at + 3);
  } catch (const Error&) {
  }
}

std::string ChatFormat::render_jinja(const std::vector<ChatMessage>& messages,
                                     bool add_generation_prompt) const {
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (const auto& m : messages) list.push_back({{"role", m.role}, {"content", m.content}});
  nlohmann::ordered_json context = {{"messages", list},
                                    {"add_generation_prompt", add_generation_prompt},
                                    {"bos_token", bos_token_},
                                    {"eos_token", eos_token_}};
  return jinja_->render(context);
}

ChatText ChatFormat::finish(std::string text, size_t response_begin, size_t content_end,
                            bool finished) const {
  ChatText out;
  bool content_only = !finished || append_eos_ == "false";
  out.prompt = text.substr(0, response_begin);
  out.response = text.substr(response_begin, (content_only ? content_end : text.size()) - response_begin);
  if (kind_ == Kind::jinja) {
    out.add_special_tokens = false;
    if (!bos_token_.empty() && starts_with(out.prompt, bos_token_)) out.bos_text = bos_token_;
  }
  if (!content_only && append_eos_ == "true") {
    std::string_view end = out.response;
    while (!end.empty() && std::isspace(static_cast<unsigned char>(end.back()))) end.remove_suffix(1);
    const std::string& eos = kind_ == Kind::jinja ? eos_token_ : tokenizer_eos_;
    out.eos = eos.empty() || end.size() < eos.size() || end.substr(end.size() - eos.size()) != eos;
  }
  return out;
}

ChatText ChatFormat::render_messages(const std::vector<ChatMessage>& messages, bool finished) const {
  if (messages.empty() || messages.back().role != "assistant")
    fail("chat format: the response must be the last message, an assistant's");
  const std::string& content = messages.back().content;
  std::vector<ChatMessage> prompt(messages.begin(), messages.end() - 1);
  switch (kind_) {
    case Kind::none: {
      std::string prefix = transcript_text(prompt) + "\n\nAssistant:";
      return finish(prefix + " " + content, prefix.size(), prefix.size() + 1 + content.size(), finished);
    }
    case Kind::family: {
      FormattedChat chat = format_chat(family_, messages);
      return finish(std::move(chat.text), chat.response_begin, chat.response_end, finished);
    }
    case Kind::jinja:
      break;
  }
  std::string head = render_jinja(prompt, true), full = render_jinja(messages, false);
  // Templates trim contents (Gemma, Llama 3); the response is found by its trimmed text, where a render
  // with a marker for the content puts the marker (so text the template writes before the content, such
  // as Qwen3's "<think>", is never taken for it), else at its first occurrence after the prompt.
  std::string_view body = trimmed(content);
  size_t begin = starts_with(full, head) ? head.size() : std::string::npos;
  size_t at = std::string::npos;
  {
    static const std::string kMarker = "\x01grm-response\x01";
    std::vector<ChatMessage> probe = messages;
    probe.back().content = kMarker;
    std::string marked = render_jinja(probe, false);
    size_t p = marked.find(kMarker);
    if (p != std::string::npos && full.compare(0, p, marked, 0, p) == 0 &&
        full.compare(p, body.size(), body) == 0)
      at = p;
  }
  if (at == std::string::npos) at = begin != std::string::npos ? full.find(body, begin) : full.rfind(body);
  if (at == std::string::npos)
    fail("{}: the template does not render the response's text, so its tokens cannot be found", jinja_name_);
  // A template that rewrites the turns before a response (DeepSeek-R1 drops its generation prompt's
  // "<think>") has the response begin at its text.
  if (begin == std::string::npos) begin = at;
  return finish(std::move(full), begin, at + body.size(), finished);
}

ChatText ChatFormat::render(std::string_view prompt, std::string_view response, bool finished) const {
  if (kind_ == Kind::none) {
    std::string text = std::string(prompt) + std::string(response);
    size_t end = text.size();
    return finish(std::move(text), prompt.size(), end, finished);
  }
  std::vector<ChatMessage> messages = transcript_messages(prompt);
  // The interchange layout puts a space before the response's content.
  if (!response.empty() && response.front() == ' ') response.remove_prefix(1);
  messages.push_back({"assistant", std::string(response)});
  return render_messages(messages, finished);
}

ChatText ChatFormat::render_prompt(std::string_view prompt) const {
  ChatText out;
  switch (kind_) {
    case Kind::none:
      out.prompt = prompt;
      return out;
    case Kind::family:
      out.prompt = format_chat(family_, transcript_messages(prompt), true).text;
      return out;
    case Kind::jinja:
      break;
  }
  out.prompt = render_jinja(transcript_messages(prompt), true);
  out.add_special_tokens = false;
  if (!bos_token_.empty() && starts_with(out.prompt, bos_token_)) out.bos_text = bos_token_;
  return out;
}

std::string ChatFormat::interchange_response(std::string decoded) const {
  // The plain family's generation header ends at "Assistant:", so the model wrote the space itself.
  bool writes_space = kind_ == Kind::none || (kind_ == Kind::family && family_ == ChatTemplate::plain);
  return writes_space ? decoded : " " + decoded;
}

ChatText ChatFormat::as_is(std::string_view text) const {
  ChatText out;
  out.response = text;
  // Templated text (a Jinja template's, or any that starts with the BOS already) carries its own
  // special tokens.
  const std::string& bos = kind_ == Kind::jinja ? bos_token_ : tokenizer_bos_;
  if (!bos.empty() && starts_with(text, bos)) out.bos_text = bos;
  if (kind_ == Kind::jinja || !out.bos_text.empty()) out.add_special_tokens = false;
  return out;
}

ChatFormat ChatFormat::with_append_eos(const std::string& append_eos) const {
  if (append_eos != "auto" && append_eos != "true" && append_eos != "false")
    fail("append_eos must be auto, true or false, not \"{}\"", append_eos);
  if (append_eos == "true" && tokenizer_eos_.empty())
    fail("append_eos is true but the tokenizer has no EOS token; set append_eos: auto");
  ChatFormat out = *this;
  out.append_eos_ = append_eos;
  return out;
}

std::string ChatFormat::description() const {
  std::string eos = append_eos_ == "auto" ? "" : ", append_eos " + append_eos_;
  switch (kind_) {
    case Kind::none:
      return "none (the text as it is" + eos + ")";
    case Kind::family:
      return std::string(chat_template_name(family_)) + " (built-in" + eos + ")";
    case Kind::jinja:
      break;
  }
  return "jinja " + jinja_name_ + eos;
}

nlohmann::json ChatFormat::to_metadata() const {
  nlohmann::json out = {{"append_eos", append_eos_}};
  switch (kind_) {
    case Kind::none:
      out["chat_template"] = "none";
      break;
    case Kind::family:
      out["chat_template"] = chat_template_name(family_);
      break;
    case Kind::jinja:
      out["chat_template"] = "jinja";
      out["chat_template_source"] = jinja_source_;
      out["chat_template_name"] = jinja_name_;
      out["bos_token"] = bos_token_;
      out["eos_token"] = eos_token_;
      break;
  }
  return out;
}

ChatFormat ChatFormat::from_metadata(const nlohmann::json& metadata, const std::string& model_dir,
                                     const Tokenizer& tokenizer) {
  std::string where = model_dir + "/config.json";
  // A model grm trained before it recorded formats read its data as text; any other model's own template
  // (if it has one) is how its authors meant it to read.
  bool grm_record = metadata.is_object() && metadata.contains("method");
  if (!metadata.is_object() || !metadata.contains("chat_template"))
    return resolve({grm_record ? "none" : "auto", "auto"}, model_dir, tokenizer, where);
  auto text = [&](const char* key) {
    if (!metadata.contains(key) || !metadata[key].is_string())
      fail("{}: grm.{} must be a string; retrain the model or fix the file", where, key);
    return metadata[key].get<std::string>();
  };
  ChatFormatConfig config{text("chat_template"),
                          metadata.contains("append_eos") ? text("append_eos") : "auto"};
  if (config.chat_template != "jinja") return resolve(config, model_dir, tokenizer, where);
  ChatFormat format = resolve({"none", config.append_eos}, model_dir, tokenizer, where);
  format.kind_ = Kind::jinja;
  format.jinja_source_ = text("chat_template_source");
  format.jinja_name_ = text("chat_template_name");
  format.bos_token_ = text("bos_token");
  format.eos_token_ = text("eos_token");
  try {
    format.jinja_ = std::make_shared<const JinjaTemplate>(format.jinja_source_, format.jinja_name_);
  } catch (const std::exception& e) {
    fail("{}: {}", where, e.what());
  }
  format.learn_end_of_turn();
  return format;
}

std::vector<int64_t> end_of_turn_ids(const ChatFormat& format, const Tokenizer& tokenizer,
                                     std::vector<int64_t> eos_ids) {
  if (format.end_of_turn().empty()) return eos_ids;
  for (int64_t id : tokenizer.encode(format.end_of_turn(), false)) {
    // A special token prints nothing when special tokens are skipped; the newline after it is text.
    bool special = tokenizer.decode({id}, true).empty() && !tokenizer.decode({id}, false).empty();
    if ((special || id == tokenizer.eos_id) && std::find(eos_ids.begin(), eos_ids.end(), id) == eos_ids.end())
      eos_ids.push_back(id);
  }
  return eos_ids;
}

}  // namespace grm
