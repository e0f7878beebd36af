// How one model reads a conversation: the text its chat template renders for (prompt, response), split
// where the response begins, and the tokens that end its turn. Every place text meets a model goes
// through a ChatFormat: RM training (and so GRM's regularizer targets and DPO's reference), evaluation,
// scoring and serving, Best-of-N and PPO prompts and their stop tokens.
//
// The interchange form. Between stages (preference files, prompt files, BoN samples, the reward server)
// a conversation travels as text in the Anthropic transcript layout the data readers produce:
//   prompt   "[SYSTEM]\n\nHuman: u1\n\nAssistant: a1\n\nHuman: u2\n\nAssistant:"   (or any plain text)
//   response " content"                               (its content, after the space the layout puts there)
// and each model turns it back into messages (transcript_messages) and renders them with its own template.
// So scoring goes through text and each reward model reads with its own template and tokenizer: the
// gold's may differ from the policy's. A prompt without "\n\nHuman:" turns is one user message.
//
// Resolution of `chat_template` (data.chat_template for train-rm, chat_template of BoN / PPO policies
// and of scorers):
//   none     the interchange text as it is: prompt + response (story models, HH-style base models)
//   auto     the model directory's own Jinja template (policy/chat_template.hpp read_model_chat_template)
//            when it has one, else none
//   NAME     a built-in family (plain, chatml, llama3, gemma, mistral): for models without a template
//   F.jinja  a Jinja template file (relative to the model directory, else as given)
// `append_eos`: auto: a finished response ends with the template's end of turn (none: with nothing);
// true: and then the tokenizer's EOS token unless the response already ends with it; false: a response
// is its content only (the reward is read at its last content token). A response cut at max_new_tokens
// (finished = false) is always its content only, so a reward model can tell it from a finished one.
//
// Jinja templates render their own special tokens (BOS among them), so their text is encoded without the
// tokenizer's post-processor, as transformers' apply_chat_template(tokenize=True) does; the built-in
// families and none leave BOS to the tokenizer.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/config.hpp"
#include "policy/chat_template.hpp"

namespace grm {

class JinjaTemplate;
class Tokenizer;

struct ChatFormatConfig {
  std::string chat_template = "auto";  // auto | none | plain | chatml | llama3 | gemma | mistral | F.jinja
  std::string append_eos = "auto";     // auto | true | false
  // Binds chat_template and append_eos at the level of the config that holds them.
  template <class V>
  void visit_keys(V& v) {
    v("chat_template", chat_template);
    v("append_eos", append_eos, Choices{"auto", "true", "false"});
  }
};

// What a model reads for one (prompt, response), split where the response begins.
struct ChatText {
  std::string prompt;              // the rendered turns before the response, its assistant header included
  std::string response;            // the response's content, then its end of turn when it finished
  bool add_special_tokens = true;  // encode with the tokenizer's post-processor (false for Jinja templates)
  std::string bos_text;  // the BOS token's text when `prompt` begins with it: a cut from the left keeps it
  bool eos = false;      // append the tokenizer's eos_id after the response's tokens (append_eos: true)
};

// The messages of an interchange prompt: "\n\nHuman: " turns are user messages, "\n\nAssistant: " turns
// assistant messages, "\n\nSystem: " turns and any text before the first turn system messages; a trailing
// empty "\n\nAssistant:" (the generation header) is dropped. Text without turns is one user message.
std::vector<ChatMessage> transcript_messages(std::string_view prompt);

class ChatFormat {
 public:
  ChatFormat() = default;  // none

  // `config` resolved against model_dir (its template, bos_token and eos_token) and its tokenizer (the
  // EOS for append_eos). `where` names the config key for errors ("data.chat_template"). Throws
  // grm::Error for an unknown name, a template file that does not parse, or append_eos: true without an
  // EOS token.
  static ChatFormat resolve(const ChatFormatConfig& config, const std::string& model_dir,
                            const Tokenizer& tokenizer, const std::string& where);

  // A finished or cut response to `prompt` (interchange form). Throws grm::Error naming the template when
  // it raises (e.g. a system message a template refuses) or renders the response somewhere it cannot be
  // found.
  ChatText render(std::string_view prompt, std::string_view response, bool finished = true) const;
  // The same from messages: the response is the last message (an assistant's).
  ChatText render_messages(const std::vector<ChatMessage>& messages, bool finished = true) const;
  // The prompt ready for the model to write a response (add_generation_prompt); response is empty.
  ChatText render_prompt(std::string_view prompt) const;
  // A response the model wrote after render_prompt's text (decoded as its continuation), in the
  // interchange form: templated formats put the layout's space before it.
  std::string interchange_response(std::string decoded) const;
  // Text that is already what the model reads (OpenRLHF's templated "query" strings): no template is
  // applied, only this format's way of encoding it; text that starts with the BOS token's text is
  // encoded without the tokenizer's special tokens, so the BOS is not doubled.
  ChatText as_is(std::string_view text) const;

  // The same format with another append_eos (auto | true | false); throws grm::Error for another value, or
  // true without an EOS token.
  ChatFormat with_append_eos(const std::string& append_eos) const;

  // What the template writes after an assistant message's content ("<|im_end|>\n", "<end_of_turn>\n");
  // empty for none.
  const std::string& end_of_turn() const { return end_of_turn_; }
  bool templated() const { return kind_ != Kind::none; }
  // "none", "chatml", "jinja <file>": for logs.
  std::string description() const;

  // The record a trained reward model keeps (config.json's "grm" section), so that its evaluations,
  // scoring and serving read text as its training did; a Jinja template is kept with its source.
  nlohmann::json to_metadata() const;
  // From a model's record (model_dir: where its template is looked up, the tokenizer's directory when it
  // has its own). A model without a record resolves {auto, auto} (a Hugging Face checkpoint), a grm
  // model from before formats were recorded {none, auto} (it read its data as text).
  static ChatFormat from_metadata(const nlohmann::json& metadata, const std::string& model_dir,
                                  const Tokenizer& tokenizer);

 private:
  enum class Kind { none, family, jinja };
  Kind kind_ = Kind::none;
  ChatTemplate family_ = ChatTemplate::plain;
  std::shared_ptr<const JinjaTemplate> jinja_;
  std::string jinja_source_, jinja_name_, bos_token_, eos_token_;
  std::string tokenizer_eos_;  // the tokenizer's EOS token's text, for append_eos: true
  std::string tokenizer_bos_;  // the tokenizer's BOS token's text, to recognise templated text
  std::string append_eos_ = "auto";
  std::string end_of_turn_;

  ChatText finish(std::string text, size_t response_begin, size_t content_end, bool finished) const;
  std::string render_jinja(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;
  void learn_end_of_turn();
};

// The ids that end a policy's turn under its format: its EOS ids and the special tokens of the
// template's end of turn (<|im_end|>, <end_of_turn>, <|eot_id|>), so generation stops there.
std::vector<int64_t> end_of_turn_ids(const ChatFormat& format, const Tokenizer& tokenizer,
                                     std::vector<int64_t> eos_ids);

}  // namespace grm
