// Chat templates against strings written out by hand from each family's published Jinja template (BOS
// left to the tokenizer), template inference from model directories, and the prompt/response boundary
// on real tokenizers.
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "policy/chat_template.hpp"
#include "policy/tokenizer/tokenizer.hpp"
#include "tests/test_util.hpp"

namespace grm {
namespace {

const std::vector<ChatMessage> kConversation = {
    {"system", "Be brief."}, {"user", "Hi there"}, {"assistant", " Hello! "}};

struct Case {
  ChatTemplate chat_template;
  std::string text;      // the whole conversation
  std::string response;  // the span the formatter reports
  std::string prompt;    // system + user with the generation prompt
};

const std::vector<Case> kCases = {
    {ChatTemplate::plain, "Be brief.\n\nHuman: Hi there\n\nAssistant:  Hello! ", " Hello! ",
     "Be brief.\n\nHuman: Hi there\n\nAssistant:"},
    {ChatTemplate::chatml,
     "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n "
     "Hello! "
     "<|im_end|>\n",
     " Hello! ",
     "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi "
     "there<|im_end|>\n<|im_start|>assistant\n"},
    {ChatTemplate::llama3,
     "<|start_header_id|>system<|end_header_id|>\n\nBe "
     "brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
     "Hi there<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>",
     "Hello!",
     "<|start_header_id|>system<|end_header_id|>\n\nBe "
     "brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
     "Hi there<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
    {ChatTemplate::gemma,
     "<start_of_turn>user\nBe brief.\n\nHi there<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n",
     "Hello!", "<start_of_turn>user\nBe brief.\n\nHi there<end_of_turn>\n<start_of_turn>model\n"},
    {ChatTemplate::mistral, "[INST] Be brief.\n\nHi there [/INST] Hello! </s>", " Hello! ",
     "[INST] Be brief.\n\nHi there [/INST]"},
};

TEST(ChatTemplate, FormatsEachFamily) {
  for (const auto& c : kCases) {
    SCOPED_TRACE(std::string(chat_template_name(c.chat_template)));
    FormattedChat chat = format_chat(c.chat_template, kConversation);
    EXPECT_EQ(chat.text, c.text);
    ASSERT_LE(chat.response_begin, chat.response_end);
    EXPECT_EQ(chat.text.substr(chat.response_begin, chat.response_end - chat.response_begin), c.response);

    std::vector<ChatMessage> prompt_only(kConversation.begin(), kConversation.end() - 1);
    FormattedChat prompt = format_chat(c.chat_template, prompt_only, true);
    EXPECT_EQ(prompt.text, c.prompt);
    EXPECT_EQ(prompt.response_begin, prompt.text.size());
    EXPECT_EQ(prompt.response_end, prompt.text.size());
  }
}

TEST(ChatTemplate, MultiTurnMarksOnlyTheFinalAssistantMessage) {
  std::vector<ChatMessage> messages = {
      {"user", "1+1?"}, {"assistant", "2"}, {"user", "and 2+2?"}, {"assistant", "4"}};
  FormattedChat chat = format_chat(ChatTemplate::plain, messages);
  EXPECT_EQ(chat.text, "\n\nHuman: 1+1?\n\nAssistant: 2\n\nHuman: and 2+2?\n\nAssistant: 4");
  EXPECT_EQ(chat.response_begin, chat.text.size() - 1);
  EXPECT_EQ(chat.response_end, chat.text.size());
  // Ending with a user message there is no response span.
  messages.pop_back();
  chat = format_chat(ChatTemplate::chatml, messages);
  EXPECT_EQ(chat.response_begin, chat.text.size());
  EXPECT_EQ(format_chat(ChatTemplate::chatml, {}).text, "");
}

TEST(ChatTemplate, RejectsUnknownRolesAndNames) {
  EXPECT_THROW(format_chat(ChatTemplate::plain, {{"tool", "x"}}), Error);
  EXPECT_THROW(format_chat(ChatTemplate::gemma, {{"user", "a"}, {"system", "late"}}), Error);
  for (ChatTemplate t : {ChatTemplate::plain, ChatTemplate::chatml, ChatTemplate::llama3, ChatTemplate::gemma,
                         ChatTemplate::mistral})
    EXPECT_EQ(chat_template_from_name(chat_template_name(t)), t);
  try {
    chat_template_from_name("vicuna");
    ADD_FAILURE() << "an unknown template name was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("vicuna"), std::string::npos);
  }
}

// The template inferred for a model directory holding only this tokenizer_config.json.
ChatTemplate infer_from_config(const nlohmann::json& config) {
  namespace fs = std::filesystem;
  fs::path dir = temp_dir("chat");
  std::ofstream(dir / "tokenizer_config.json") << config.dump();
  ChatTemplate inferred = infer_chat_template(dir.string());
  fs::remove_all(dir);
  return inferred;
}

TEST(ChatTemplate, InfersFromTokenizerConfig) {
  using nlohmann::json;
  EXPECT_EQ(infer_chat_template(shared_path("models/tinystories-656k")),
            ChatTemplate::plain);  // a base model
  EXPECT_EQ(
      infer_from_config({{"chat_template", "{% for m in messages %}<|im_start|>{{ m.role }}\n{% endfor %}"}}),
      ChatTemplate::chatml);
  EXPECT_EQ(infer_from_config({{"chat_template", "<|start_header_id|>{{ role }}"}}), ChatTemplate::llama3);
  EXPECT_EQ(infer_from_config({{"chat_template", "<start_of_turn>model\n"}}), ChatTemplate::gemma);
  // the list form, whose "default" entry is the chat template
  EXPECT_EQ(
      infer_from_config({{"chat_template", json::array({{{"name", "tool_use"}, {"template", "<|im_start|>"}},
                                                        {{"name", "default"}, {"template", "[INST] "}}})}}),
      ChatTemplate::mistral);
  EXPECT_EQ(infer_from_config({{"tokenizer_class", "GemmaTokenizerFast"}}), ChatTemplate::gemma);
  EXPECT_EQ(infer_from_config(json::object()), ChatTemplate::plain);
}

std::vector<int64_t> slice(const std::vector<int64_t>& ids, size_t begin, size_t end) {
  return std::vector<int64_t>(ids.begin() + long(begin), ids.begin() + long(end));
}

TEST(ChatTemplate, PromptResponseBoundary) {
  auto gpt2 = load_tokenizer(shared_path("tokenizers/gpt2/tokenizer.json"));
  // The generation prompt ends at the colon; the response brings its space.
  auto split = tokenize_prompt_response(*gpt2, "\n\nHuman: Hi\n\nAssistant:", " Hello there");
  EXPECT_EQ(split.ids, gpt2->encode("\n\nHuman: Hi\n\nAssistant: Hello there"));
  EXPECT_EQ(slice(split.ids, 0, split.response_begin), gpt2->encode("\n\nHuman: Hi\n\nAssistant:"));
  EXPECT_EQ(gpt2->decode(slice(split.ids, split.response_begin, split.ids.size())), " Hello there");
  // A prompt ending in a space: " Hello" spans the seam and counts as response.
  split = tokenize_prompt_response(*gpt2, "Assistant: ", "Hello");
  EXPECT_EQ(gpt2->decode(slice(split.ids, split.response_begin, split.ids.size())), " Hello");

  // BOS before and EOS after: the boundary counts the BOS, and the EOS is response.
  auto tiny = load_tokenizer(shared_path("models/tinystories-656k"));
  tiny->add_eos = true;
  split = tokenize_prompt_response(*tiny, "Once upon a time", ", there was a dog.");
  EXPECT_EQ(split.ids, tiny->encode("Once upon a time, there was a dog."));
  EXPECT_EQ(split.ids.front(), 1);
  EXPECT_EQ(split.ids.back(), 2);
  auto prompt_ids = tiny->encode("Once upon a time", false);
  ASSERT_GE(split.response_begin, 1u);
  ASSERT_LE(split.response_begin, prompt_ids.size() + 1);
  EXPECT_EQ(slice(split.ids, 1, split.response_begin), slice(prompt_ids, 0, split.response_begin - 1));
  EXPECT_LT(split.response_begin, split.ids.size() - 1);

  // Formatting and splitting together: the response tokens decode to the response text.
  FormattedChat chat = format_chat(ChatTemplate::plain, {{"user", "Hi"}, {"assistant", "Hello there"}});
  split = tokenize_prompt_response(*gpt2, std::string_view(chat.text).substr(0, chat.response_begin),
                                   std::string_view(chat.text).substr(chat.response_begin));
  EXPECT_EQ(gpt2->decode(slice(split.ids, split.response_begin, split.ids.size())), " Hello there");
}

}  // namespace
}  // namespace grm
