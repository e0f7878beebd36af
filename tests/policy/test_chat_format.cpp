// Chat formats: every fixture template's conversations rendered as transformers renders them, split
// where the response begins so that the response tokens decode to exactly the response (the mask of
// log pi and of the reward position); the interchange transcript read back into messages; end of turn,
// append_eos and cut responses; stop tokens.
#include <filesystem>
#include <fstream>
#include <set>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/atomic_file.hpp"
#include "core/error.hpp"
#include "policy/chat_format.hpp"
#include "policy/model_path.hpp"
#include "policy/tokenizer/tokenizer.hpp"
#include "rm/preference_data.hpp"
#include "rm/reward_data.hpp"
#include "tests/test_util.hpp"

namespace grm {
namespace {

namespace fs = std::filesystem;
using nlohmann::ordered_json;

// A model directory holding only a tokenizer_config.json with `source` as its chat template.
std::string template_dir(const std::string& name, const std::string& source, const std::string& bos,
                         const std::string& eos) {
  auto dir = temp_dir("chat_format_" + name);
  nlohmann::json config = {{"chat_template", source}, {"bos_token", bos}, {"eos_token", eos}};
  write_file_atomic((dir / "tokenizer_config.json").string(), config.dump());
  return dir.string();
}

std::vector<ChatMessage> plain_messages(const ordered_json& list) {
  std::vector<ChatMessage> out;
  for (const auto& m : list) {
    if (!m.is_object() || m.size() != 2 || !m.contains("role") || !m.contains("content") ||
        !m["content"].is_string())
      return {};
    out.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
  }
  return out;
}

TEST(ChatFormat, EveryFixtureTemplateSplitsItsRenderingWhereTheResponseBegins) {
  std::ifstream in(shared_path("fixtures/chat_templates/expected.json"));
  ordered_json cases = ordered_json::parse(in);
  auto gpt2 = load_tokenizer(shared_path("tokenizers/gpt2/tokenizer.json"));
  const std::set<std::string> plain_keys = {"template", "case",      "description", "rendered",
                                            "messages", "bos_token", "eos_token",   "add_generation_prompt"};
  std::set<std::string> templates, checked;
  size_t exact = 0;
  for (const auto& record : cases) {
    std::string name = record.at("template");
    templates.insert(name);
    // Conversations of {role, content} strings that end in an assistant message and render.
    bool plain = record.contains("rendered") && !record.value("add_generation_prompt", false);
    for (const auto& [key, value] : record.items()) plain = plain && plain_keys.count(key);
    auto messages = plain ? plain_messages(record.at("messages")) : std::vector<ChatMessage>{};
    if (messages.empty() || messages.back().role != "assistant" || messages.back().content.empty()) continue;
    SCOPED_TRACE(name + " case " + record.value("case", "?"));
    std::string source = read_file(shared_path("fixtures/chat_templates/" + name + ".jinja"));
    std::string dir =
        template_dir(name, source, record.value("bos_token", ""), record.value("eos_token", ""));
    ChatFormat format = ChatFormat::resolve({"auto", "auto"}, dir, *gpt2, "test");
    ASSERT_TRUE(format.templated());
    ChatText text = format.render_messages(messages);
    // The date a template reads from strftime_now is today's, not the fixture's.
    if (source.find("strftime_now") == std::string::npos)
      EXPECT_EQ(text.prompt + text.response, record["rendered"].get<std::string>());
    EXPECT_FALSE(text.add_special_tokens);  // the template writes its own
    // The response is what follows the generation prompt (Llama 2's " " after [/INST] included), its
    // content, then the template's end of turn; cut, it ends with the content.
    std::string content = messages.back().content;
    content.erase(content.find_last_not_of(" \n") + 1);
    content.erase(0, content.find_first_not_of(" \n"));
    size_t at = text.response.find(content);
    ASSERT_NE(at, std::string::npos) << text.response;
    EXPECT_EQ(text.response.find_first_not_of(" \n"), at) << text.response;
    EXPECT_EQ(format.render_messages(messages, false).response, text.response.substr(0, at + content.size()));
    EXPECT_EQ(text.response.substr(at + content.size()), format.end_of_turn());
    // The response's tokens are the rendered text's past the prompt: they decode to the response, led at
    // most by whitespace ending the prompt that the tokenizer joins to the response's first token (GPT-2
    // writes "\n\n" alone as one token but before a word as two). So log pi's span and the reward's
    // position are exact up to that whitespace.
    auto encoded = encode_chat_text(*gpt2, text, 0);
    std::vector<int64_t> head(encoded.ids.begin(), encoded.ids.begin() + encoded.response_start),
        tail(encoded.ids.begin() + encoded.response_start, encoded.ids.end());
    std::string head_text = gpt2->decode(head, false), tail_text = gpt2->decode(tail, false);
    EXPECT_EQ(head_text + tail_text, text.prompt + text.response);
    ASSERT_GE(tail_text.size(), text.response.size());
    std::string seam = tail_text.substr(0, tail_text.size() - text.response.size());
    EXPECT_EQ(tail_text.substr(seam.size()), text.response);
    EXPECT_EQ(seam.find_first_not_of(" \n"), std::string::npos) << "seam: " << seam;
    exact += seam.empty() ? 1 : 0;
    checked.insert(name);
    fs::remove_all(dir);
  }
  // Every template whose cases include such a conversation was checked; most of them do.
  EXPECT_GE(checked.size(), templates.size() / 2) << checked.size() << " of " << templates.size();
  EXPECT_GT(exact, 0u);
}

TEST(ChatFormat, TranscriptsReadBackIntoTheMessagesTheyWereWrittenFrom) {
  auto dir = temp_dir("chat_format_transcript");
  std::vector<ChatMessage> conversation = {{"system", "Be brief."},
                                           {"user", "Hi there"},
                                           {"assistant", "Hello!"},
                                           {"user", "How are you?"},
                                           {"assistant", "Fine, thanks."}};
  nlohmann::json chosen = nlohmann::json::array(), rejected = nlohmann::json::array();
  for (const auto& m : conversation) chosen.push_back({{"role", m.role}, {"content", m.content}});
  rejected = chosen;
  rejected.back()["content"] = "Go away.";
  write_file_atomic((dir / "pairs.jsonl").string(),
                    nlohmann::json{{"chosen", chosen}, {"rejected", rejected}}.dump() + "\n");
  DataConfig data;
  data.path = (dir / "pairs.jsonl").string();
  auto pairs = read_preferences(data);
  ASSERT_EQ(pairs.size(), 1u);
  auto messages = transcript_messages(pairs[0].prompt);
  ASSERT_EQ(messages.size(), conversation.size() - 1);
  for (size_t i = 0; i < messages.size(); ++i) {
    EXPECT_EQ(messages[i].role, conversation[i].role);
    EXPECT_EQ(messages[i].content, conversation[i].content);
  }
  // A templated format renders the transcript as it renders the messages themselves.
  auto tiny = load_tokenizer(resolve_model_path("tinystories-656k"));
  ChatFormat chatml = ChatFormat::resolve({"chatml", "auto"}, dir.string(), *tiny, "test");
  ChatText from_pair = chatml.render(pairs[0].prompt, pairs[0].chosen);
  ChatText from_messages = chatml.render_messages(conversation);
  EXPECT_EQ(from_pair.prompt, from_messages.prompt);
  EXPECT_EQ(from_pair.response, "Fine, thanks.<|im_end|>\n");
  // HH-RLHF's own transcripts, and plain text (one user message).
  auto hh = transcript_messages("\n\nHuman: What is 2+2?\n\nAssistant: 4\n\nHuman: And 3+3?\n\nAssistant:");
  ASSERT_EQ(hh.size(), 3u);
  EXPECT_EQ(hh[2].role, "user");
  EXPECT_EQ(hh[2].content, "And 3+3?");
  auto story = transcript_messages("Once upon a time");
  ASSERT_EQ(story.size(), 1u);
  EXPECT_EQ(story[0].role, "user");
  EXPECT_EQ(story[0].content, "Once upon a time");
  fs::remove_all(dir);
}

TEST(ChatFormat, AppendEosAndCutResponses) {
  auto model_dir = resolve_model_path("tinystories-656k");
  auto tiny = load_tokenizer(model_dir);
  ASSERT_TRUE(tiny->eos_id.has_value());
  // none: the text as it is; append_eos: true ends a finished response with EOS, never a cut one.
  ChatFormat none = ChatFormat::resolve({"none", "auto"}, model_dir, *tiny, "test");
  ChatText plain = none.render("Once upon a time", " there was a dog.");
  EXPECT_EQ(plain.prompt + plain.response, "Once upon a time there was a dog.");
  EXPECT_FALSE(plain.eos);
  ChatFormat with_eos = ChatFormat::resolve({"none", "true"}, model_dir, *tiny, "test");
  auto finished = encode_chat_text(*tiny, with_eos.render("Once upon a time", " there was a dog."), 0);
  auto cut = encode_chat_text(*tiny, with_eos.render("Once upon a time", " there was a dog.", false), 0);
  auto as_is = encode_chat_text(*tiny, plain, 0);
  EXPECT_EQ(finished.ids.back(), *tiny->eos_id);
  EXPECT_EQ(finished.ids.size(), as_is.ids.size() + 1);
  EXPECT_EQ(cut.ids, as_is.ids);
  // Truncated from the left, the EOS where the reward is read stays.
  auto short_one = encode_chat_text(*tiny, with_eos.render("Once upon a time", " there was a dog."), 4);
  EXPECT_EQ(short_one.ids.back(), *tiny->eos_id);
  // A template's end of turn is the response's end; append_eos: false drops it.
  ChatFormat gemma = ChatFormat::resolve({"gemma", "auto"}, model_dir, *tiny, "test");
  EXPECT_EQ(gemma.end_of_turn(), "<end_of_turn>\n");
  EXPECT_EQ(gemma.render("Hi", " Hello").response, "Hello<end_of_turn>\n");
  EXPECT_EQ(gemma.render("Hi", " Hello", false).response, "Hello");
  ChatFormat content_only = ChatFormat::resolve({"gemma", "false"}, model_dir, *tiny, "test");
  EXPECT_EQ(content_only.render("Hi", " Hello").response, "Hello");
  EXPECT_EQ(gemma.render_prompt("Hi").prompt, "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n");
  // The record a reward model keeps gives back the same format; a grm model from before formats were
  // recorded read text as it is, a Hugging Face model without a record reads with its own template.
  ChatFormat again = ChatFormat::from_metadata(gemma.to_metadata(), model_dir, *tiny);
  EXPECT_EQ(again.render("Hi", " Hello").response, "Hello<end_of_turn>\n");
  auto dir =
      template_dir("legacy", "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}", "", "");
  EXPECT_FALSE(ChatFormat::from_metadata({{"method", "bt"}, {"max_length", 64}}, dir, *tiny).templated());
  EXPECT_TRUE(ChatFormat::from_metadata(nlohmann::json::object(), dir, *tiny).templated());
  fs::remove_all(dir);
  // append_eos alone can be changed on a recorded format.
  EXPECT_EQ(again.with_append_eos("false").render("Hi", " Hello").response, "Hello");
  EXPECT_THROW(again.with_append_eos("yes"), Error);
  // Text starting with the BOS already is not given a second one: it is encoded as it is, as
  // transformers encodes templated text (add_special_tokens=False).
  auto bos_text = tiny->decode({*tiny->bos_id}, false);
  auto once = encode_chat_text(*tiny, none.as_is(bos_text + "Once upon a time"), 0);
  EXPECT_EQ(once.ids, tiny->encode(bos_text + "Once upon a time", false));
  ASSERT_GE(once.ids.size(), 2u);
  EXPECT_EQ(once.ids[0], *tiny->bos_id);
  EXPECT_NE(once.ids[1], *tiny->bos_id);
}

TEST(ChatFormat, JinjaTemplatesKeepTheirBosAndRecordTheirSource) {
  auto gpt2 = load_tokenizer(shared_path("tokenizers/gpt2/tokenizer.json"));
  std::string source =
      "{{ bos_token }}{% for m in messages %}{{ m.role }}: {{ m.content }}<|endoftext|>\n{% endfor %}"
      "{% if add_generation_prompt %}assistant: {% endif %}";
  std::string dir = template_dir("bos", source, "<|endoftext|>", "<|endoftext|>");
  ChatFormat format = ChatFormat::resolve({"auto", "auto"}, dir, *gpt2, "test");
  ChatText text = format.render("Hi", " Hello");
  EXPECT_EQ(text.prompt, "<|endoftext|>user: Hi<|endoftext|>\nassistant: ");
  EXPECT_EQ(text.response, "Hello<|endoftext|>\n");
  EXPECT_EQ(text.bos_text, "<|endoftext|>");
  // The template's special token ends the turn for generation; its newline does not.
  EXPECT_EQ(end_of_turn_ids(format, *gpt2, {}), std::vector<int64_t>{50256});
  // Bounded encoding of a long text keeps the template's leading BOS.
  std::string long_prompt(20000, 'a');
  auto bounded = encode_chat_text_bounded(*gpt2, format.render(long_prompt, " Hello"), 16, 8);
  EXPECT_EQ(bounded.ids.front(), 50256);
  EXPECT_EQ(bounded.ids.size(), 16u);
  // An untemplated query longer than the byte budget keeps its leading BOS too.
  auto query =
      encode_chat_text_bounded(*gpt2, format.as_is(text.prompt + long_prompt + text.response), 16, 8);
  EXPECT_EQ(query.ids.front(), 50256);
  EXPECT_EQ(query.ids.size(), 16u);
  // A model's record carries the source, so a copied or moved model reads text the same way.
  fs::remove_all(dir);
  ChatFormat again = ChatFormat::from_metadata(format.to_metadata(), "/nonexistent", *gpt2);
  EXPECT_EQ(again.render("Hi", " Hello").prompt, text.prompt);
}

TEST(ChatFormat, BadSettingsAreErrorsNamingTheKey) {
  auto model_dir = resolve_model_path("tinystories-656k");
  auto tiny = load_tokenizer(model_dir);
  std::string message = error_of([&] {
    ChatFormat::resolve({"vicuna", "auto"}, model_dir, *tiny, "data.chat_template");
  });
  EXPECT_NE(message.find("data.chat_template"), std::string::npos) << message;
  EXPECT_NE(message.find("chatml"), std::string::npos) << message;
  message = error_of([&] {
    ChatFormat::resolve({"missing.jinja", "auto"}, model_dir, *tiny, "chat_template");
  });
  EXPECT_NE(message.find("missing.jinja"), std::string::npos) << message;
  // A template that raises on a conversation says so with its own message.
  auto dir = temp_dir("chat_format_raises");
  write_file_atomic((dir / "strict.jinja").string(),
                    "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('System role not "
                    "supported') }}{% endif %}{{ m.content }}{% endfor %}");
  ChatFormat strict =
      ChatFormat::resolve({(dir / "strict.jinja").string(), "auto"}, model_dir, *tiny, "test");
  message = error_of([&] { strict.render("Be brief.\n\nHuman: Hi\n\nAssistant:", " Hello"); });
  EXPECT_NE(message.find("System role not supported"), std::string::npos) << message;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace grm
