// Chat formatting: built-in templates that turn {role, content} messages into the text a chat model was
// trained on, with the byte span of the final assistant message's content known, so training can mask the
// prompt. A template is chosen by name (config) or inferred from a model directory's tokenizer_config.json.
// Templates leave BOS to the tokenizer: encode(text, true) adds it wherever the model expects one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace grm {

class Tokenizer;

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

struct FormattedChat {
  std::string text;
  // Byte offsets [response_begin, response_end) of the final assistant message's content in text; both
  // text.size() when the chat ends in a generation prompt or has no final assistant message.
  size_t response_begin = 0, response_end = 0;
};

enum class ChatTemplate {
  plain,    // "\n\nHuman: ...\n\nAssistant: ..." transcripts (Anthropic HH-RLHF); system text first
  chatml,   // <|im_start|>role\n...<|im_end|>\n (Qwen and others)
  llama3,   // <|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|>
  gemma,    // <start_of_turn>user|model\n...<end_of_turn>\n; a system message joins the first user turn
  mistral,  // [INST] user [/INST]assistant</s>; a system message joins the first user turn
};

// Throws grm::Error naming the known templates for an unknown name.
ChatTemplate chat_template_from_name(std::string_view name);
std::string_view chat_template_name(ChatTemplate chat_template);
// From tokenizer_config.json's chat_template (or chat_template.jinja / chat_template.json) in model_dir by
// the markers it writes, else from tokenizer_class (Qwen2 -> chatml, Gemma -> gemma), else plain.
ChatTemplate infer_chat_template(const std::string& model_dir);

// A model directory's own Jinja chat template and the special tokens it refers to, as transformers loads
// them: chat_template of tokenizer_config.json (a string, or the "default" of a list of {name, template}),
// else chat_template.jinja or chat_template.json; bos_token / eos_token from tokenizer_config.json (a
// string or an {"content": ...} object). `source` is empty when the model has no template.
struct ModelChatTemplate {
  std::string source, name;  // name: "<dir>/tokenizer_config.json" or the file it came from, for errors
  std::string bos_token, eos_token;
};
ModelChatTemplate read_model_chat_template(const std::string& model_dir);

// add_generation_prompt: end with the assistant's header, ready for the model to write the response.
// Throws grm::Error for a role other than system, user or assistant.
FormattedChat format_chat(ChatTemplate chat_template, const std::vector<ChatMessage>& messages,
                          bool add_generation_prompt = false);

struct TokenizedResponse {
  std::vector<int64_t> ids;  // the tokens of prompt + response, as encode(prompt + response) gives them
  size_t response_begin;     // ids[response_begin:] are the response's tokens
};

// Tokenizes prompt and response together, so the tokens at the seam are those the model sees, and puts the
// boundary where those ids first differ from the prompt's own (both without special tokens, then shifted
// past the special prefix). A token that spans the seam (" Hello" from "Assistant: " + "Hello") counts as
// response, so every response byte is in a response token.
TokenizedResponse tokenize_prompt_response(const Tokenizer& tokenizer, std::string_view prompt,
                                           std::string_view response, bool add_special_tokens = true);

}  // namespace grm
