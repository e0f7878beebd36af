// Tokenizers against the reference libraries' own outputs (HF tokenizers, SentencePiece, llama.cpp's
// vectors from HF) read from the fixture tree, plus small tokenizer.json files whose ids are worked out
// by hand from HF tokenizers' rules, and the edge cases: invalid UTF-8, empty and 1 MB texts, malformed
// files.
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "bench/tokenize_bench.hpp"
#include "core/error.hpp"
#include "policy/tokenizer/tokenizer.hpp"
#include "policy/tokenizer/unicode.hpp"
#include "tests/test_util.hpp"

namespace grm {
namespace {

using nlohmann::json;
using Ids = std::vector<int64_t>;
namespace fs = std::filesystem;

// A fresh directory under the system temp dir, unique to this process, removed at scope exit.
struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name) : path(temp_dir(name)) {}
  ~TempDir() { fs::remove_all(path); }
};

// Writes `document` as a tokenizer.json in a temporary directory and loads it.
std::unique_ptr<Tokenizer> load_document(const json& document, const std::string& name) {
  TempDir dir("tok_" + name);
  std::ofstream(dir.path / "tokenizer.json") << document.dump();
  return load_tokenizer((dir.path / "tokenizer.json").string());
}

json read_json(const std::string& path) {
  std::ifstream in(path);
  return json::parse(in);
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

Ids ids_of(const json& list) {
  return list.get<Ids>();
}

// ---- reference outputs ----------------------------------------------------------------------------------

void expect_hf_fixture(const std::string& dir) {
  auto tokenizer = load_tokenizer(shared_path(dir + "/tokenizer.json"));
  json expected = read_json(shared_path(dir + "/expected.json"));
  ASSERT_FALSE(expected.empty());
  for (const auto& entry : expected) {
    std::string text = entry["text"];
    Ids ids = ids_of(entry["ids"]);
    EXPECT_EQ(tokenizer->encode(text), ids) << dir << " text: " << text;
    EXPECT_EQ(tokenizer->decode(ids), entry["decoded"].get<std::string>()) << dir << " text: " << text;
  }
}

TEST(TokenizerReference, HfByteLevelGpt2Layout) {
  expect_hf_fixture("fixtures/hf/tokenizer_gpt2");
}
TEST(TokenizerReference, HfByteLevelLlama3Layout) {
  expect_hf_fixture("fixtures/hf/tokenizer_llama3");
}

json real_expectations() {
  json expected = read_json(shared_path("fixtures/real/tokenizer_expected.json"));
  if (expected.empty()) fail("fixtures/real/tokenizer_expected.json has no entries");
  return expected;
}

TEST(TokenizerReference, TinyStories) {
  auto tokenizer = load_tokenizer(shared_path("models/tinystories-656k"));
  for (const auto& entry : real_expectations()) {
    std::string text = entry["text"];
    Ids ids = ids_of(entry["tinystories_ids"]);
    EXPECT_EQ(tokenizer->encode(text), ids) << "text: " << text;
    // made with skip_special_tokens=True, which keeps this file's normalized special tokens
    EXPECT_EQ(tokenizer->decode(ids, true), entry["tinystories_decoded"].get<std::string>())
        << "text: " << text;
  }
}

TEST(TokenizerReference, Gpt2TokenizerJson) {
  auto tokenizer = load_tokenizer(shared_path("tokenizers/gpt2/tokenizer.json"));
  for (const auto& entry : real_expectations()) {
    std::string text = entry["text"];
    Ids ids = ids_of(entry["gpt2_ids"]);
    EXPECT_EQ(tokenizer->encode(text), ids) << "text: " << text;
    EXPECT_EQ(tokenizer->decode(ids), entry["gpt2_decoded"].get<std::string>()) << "text: " << text;
  }
}

// The expectation was made from encoder.json + vocab.bpe; the directory loader reads that pair when it
// has no tokenizer.json, so check the pair directly as well.
TEST(TokenizerReference, Gpt2EncoderJsonAndVocabBpe) {
  TempDir dir("gpt2_pair");
  for (const char* name : {"encoder.json", "vocab.bpe"})
    fs::copy_file(shared_path(std::string("tokenizers/gpt2/") + name), dir.path / name);
  auto tokenizer = load_tokenizer(dir.path.string());
  for (const auto& entry : real_expectations()) {
    std::string text = entry["text"];
    EXPECT_EQ(tokenizer->encode(text), ids_of(entry["gpt2_ids"])) << "text: " << text;
  }
  EXPECT_EQ(tokenizer->vocab_size(), 50257);
}

TEST(TokenizerReference, Llama2SentencePiece) {
  auto tokenizer = load_tokenizer(shared_path("tokenizers/llama2-spm/tokenizer.model"));
  for (const auto& entry : real_expectations()) {
    std::string text = entry["text"];
    Ids ids = ids_of(entry["llama2_spm_ids"]);
    EXPECT_EQ(tokenizer->encode(text, false), ids) << "text: " << text;  // sp.encode adds no BOS
    EXPECT_EQ(tokenizer->decode(ids), entry["llama2_spm_decoded"].get<std::string>()) << "text: " << text;
  }
}

// llama.cpp's test vectors: texts separated by "\n__ggml_vocab_test__\n" lines (the file ends with one),
// and one line of space-separated ids per text.
void expect_llama_cpp_vectors(const std::string& tokenizer_file, const std::string& vectors) {
  auto tokenizer = load_tokenizer(shared_path(tokenizer_file));
  std::string input = read_text(shared_path(vectors + ".inp"));
  const std::string separator = "\n__ggml_vocab_test__\n";
  std::vector<std::string> texts;
  for (size_t pos = 0, next; (next = input.find(separator, pos)) != std::string::npos;
       pos = next + separator.size())
    texts.push_back(input.substr(pos, next - pos));
  std::ifstream out(shared_path(vectors + ".out"));
  std::vector<Ids> expected;
  for (std::string line; std::getline(out, line);) {
    std::istringstream fields(line);
    Ids ids;
    for (int64_t id; fields >> id;) ids.push_back(id);
    expected.push_back(ids);
  }
  ASSERT_FALSE(texts.empty());
  ASSERT_EQ(texts.size(), expected.size()) << vectors;
  for (size_t i = 0; i < texts.size(); ++i)
    EXPECT_EQ(tokenizer->encode(texts[i], false), expected[i])
        << vectors << " text " << i << ": " << texts[i];
}

TEST(TokenizerReference, LlamaCppVectorsGpt2) {
  expect_llama_cpp_vectors("tokenizers/gpt2/tokenizer.json", "tokenizers/gpt2/ggml-vocab-gpt-2.gguf");
}

TEST(TokenizerReference, LlamaCppVectorsLlama2) {
  expect_llama_cpp_vectors("tokenizers/llama2-spm/tokenizer.model",
                           "tokenizers/llama2-spm/ggml-vocab-llama-spm.gguf");
}

TEST(TokenizerReference, SpecialIdsFromModelDirectory) {
  auto tokenizer = load_tokenizer(shared_path("models/tinystories-656k"));
  EXPECT_EQ(tokenizer->bos_id, std::optional<int64_t>(1));  // "<|start_story|>"
  EXPECT_EQ(tokenizer->eos_id, std::optional<int64_t>(2));  // "<|end_story|>"
  EXPECT_EQ(tokenizer->pad_id, std::optional<int64_t>(0));  // "<unk>"
  EXPECT_EQ(tokenizer->vocab_size(), 2048);
  EXPECT_EQ(tokenizer->id_to_piece(1), "<|start_story|>");
  EXPECT_EQ(tokenizer->piece_to_id("<|end_story|>"), std::optional<int64_t>(2));
  EXPECT_EQ(tokenizer->piece_to_id("no such piece"), std::nullopt);
  EXPECT_THROW(tokenizer->id_to_piece(2048), Error);

  auto llama2 = load_tokenizer(shared_path("tokenizers/llama2-spm/tokenizer.model"));
  EXPECT_EQ(llama2->bos_id, std::optional<int64_t>(1));
  EXPECT_EQ(llama2->eos_id, std::optional<int64_t>(2));
  EXPECT_EQ(llama2->vocab_size(), 32000);
  EXPECT_EQ(llama2->encode("Hello world"), (Ids{1, 15043, 3186}));  // BOS, as LlamaTokenizer adds it
  EXPECT_EQ(llama2->piece_to_id("▁Hello"), std::optional<int64_t>(15043));
  EXPECT_EQ(llama2->piece_to_id("no such piece"), std::nullopt);
}

TEST(TokenizerReference, BosEosOverrides) {
  auto tokenizer = load_tokenizer(shared_path("models/tinystories-656k"));
  Ids plain = tokenizer->encode("Hello world", false);
  tokenizer->add_bos = false;
  tokenizer->add_eos = true;
  Ids expected = plain;
  expected.push_back(2);
  EXPECT_EQ(tokenizer->encode("Hello world"), expected);
}

// One tokenizer of each kind the fixture tree has.
std::vector<std::pair<std::string, std::unique_ptr<Tokenizer>>> all_tokenizers() {
  std::vector<std::pair<std::string, std::unique_ptr<Tokenizer>>> out;
  for (const char* path :
       {"models/tinystories-656k", "tokenizers/gpt2/tokenizer.json",
        "fixtures/hf/tokenizer_llama3/tokenizer.json", "tokenizers/llama2-spm/tokenizer.model"})
    out.emplace_back(path, load_tokenizer(shared_path(path)));
  return out;
}

TEST(TokenizerReference, BatchEqualsSingle) {
  auto texts = read_preference_texts(shared_path("data/hh_rlhf_harmless_test.jsonl.gz"));
  ASSERT_GT(texts.size(), 1000u);
  texts.resize(600);
  for (const auto& [name, tokenizer] : all_tokenizers()) {
    auto batch = tokenizer->encode_batch(texts, true, 2);
    ASSERT_EQ(batch.size(), texts.size());
    for (size_t i = 0; i < texts.size(); ++i)
      ASSERT_EQ(batch[i], tokenizer->encode(texts[i])) << name << " row " << i;
  }
}

// The merge loop (a heap, words cut where no piece spans two characters, parts memoised) against the
// textbook loop: merge the lowest-ranked adjacent pair, leftmost first, until none is left. Whole
// preference texts are single words here, the case that exercises the cuts.
TEST(TokenizerReference, MergeLoopMatchesTextbookBpe) {
  json file = read_json(shared_path("models/tinystories-656k/tokenizer.json"));
  const json& vocab = file["model"]["vocab"];
  std::map<std::pair<int64_t, int64_t>, std::pair<size_t, int64_t>> ranks;  // pair -> (rank, merged id)
  const json& merges = file["model"]["merges"];
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    std::string left, right;
    if (merges[rank].is_string()) {
      std::string line = merges[rank];
      left = line.substr(0, line.find(' '));
      right = line.substr(line.find(' ') + 1);
    } else {
      left = merges[rank][0];
      right = merges[rank][1];
    }
    ranks[{vocab[left], vocab[right]}] = {rank, vocab[left + right]};
  }
  json bare = {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}}};
  auto tokenizer = load_document(bare, "textbook");

  const std::string space = vocab.contains("\u2581") ? "\u2581" : " ";
  auto texts = read_preference_texts(shared_path("data/hh_rlhf_harmless_test.jsonl.gz"));
  size_t n_checked = 0;
  for (size_t t = 0; t < texts.size() && n_checked < 150; t += 7) {
    std::string word;  // spaces as the Metaspace character where the vocabulary uses it, as TinyStories' does
    for (char c : texts[t].substr(0, 400)) word += c == ' ' ? space : std::string(1, c);
    Ids symbols;
    bool known = true;
    for (size_t pos = 0; pos < word.size() && known;) {
      size_t start = pos;
      unicode::next_code_point(word, pos);
      auto it = vocab.find(word.substr(start, pos - start));
      known = it != vocab.end();
      if (known) symbols.push_back(it->get<int64_t>());
    }
    if (!known) continue;  // unknown characters are tested elsewhere
    while (true) {
      size_t best = symbols.size();
      std::pair<size_t, int64_t> best_merge{SIZE_MAX, -1};
      for (size_t i = 0; i + 1 < symbols.size(); ++i) {
        auto it = ranks.find({symbols[i], symbols[i + 1]});
        if (it != ranks.end() && it->second.first < best_merge.first) best = i, best_merge = it->second;
      }
      if (best == symbols.size()) break;
      symbols[best] = best_merge.second;
      symbols.erase(symbols.begin() + long(best) + 1);
    }
    ASSERT_EQ(tokenizer->encode(word), symbols) << "text " << t;
    ASSERT_EQ(tokenizer->encode_batch({word, word}, false, 2)[1], symbols) << "text " << t;
    ++n_checked;
  }
  EXPECT_GE(n_checked, 50u);
}

// ---- edge cases -----------------------------------------------------------------------------------------

// Invalid bytes are decoded with replacement first, so they tokenize as U+FFFD would.
TEST(TokenizerEdgeCases, InvalidUtf8TokenizesAsReplacementCharacters) {
  const std::string invalid = "ok \xFF\xFE then \xE2\x82 and \xF0\x9F\x99 end \xC0\xAF";
  const std::string replaced = unicode::to_valid_utf8(invalid);
  EXPECT_EQ(replaced, "ok \uFFFD\uFFFD then \uFFFD and \uFFFD end \uFFFD\uFFFD");
  for (const auto& [name, tokenizer] : all_tokenizers()) {
    Ids ids = tokenizer->encode(invalid);
    EXPECT_EQ(ids, tokenizer->encode(replaced)) << name;
    EXPECT_FALSE(ids.empty()) << name;
  }
  // A byte-level tokenizer round-trips the repaired text exactly.
  auto gpt2 = load_tokenizer(shared_path("tokenizers/gpt2/tokenizer.json"));
  EXPECT_EQ(gpt2->decode(gpt2->encode(invalid)), replaced);
  // Decoding a lone lead byte (GPT-2 id 158 is byte 0xE2) gives U+FFFD, as from_utf8_lossy does.
  EXPECT_EQ(gpt2->decode({158}), "\uFFFD");
}

TEST(TokenizerEdgeCases, EmptyString) {
  for (const auto& [name, tokenizer] : all_tokenizers()) {
    EXPECT_EQ(tokenizer->encode("", false), Ids{}) << name;
    EXPECT_EQ(tokenizer->decode({}), "") << name;
  }
  EXPECT_EQ(load_tokenizer(shared_path("models/tinystories-656k"))->encode(""), Ids{1});  // BOS only
}

TEST(TokenizerEdgeCases, OneMegabyteText) {
  const std::string mixed = [] {
    std::string text;
    while (text.size() < (1 << 20))
      text += "The reward model's score: 3.14 — naïve café, 東京 🙂!\n\n  Human: why?\tAssistant: ";
    return text;
  }();
  const std::string letters(1 << 20, 'a');  // one 1 MB word: the regex and the merge loop's worst case
  for (const auto& [name, tokenizer] : all_tokenizers()) {
    for (const std::string* text : {&mixed, &letters}) {
      auto start = std::chrono::steady_clock::now();
      Ids ids = tokenizer->encode(*text, false);
      double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      EXPECT_LT(seconds, 20.0) << name;
      EXPECT_GT(ids.size(), 1000u) << name;
    }
  }
  auto gpt2 = load_tokenizer(shared_path("tokenizers/gpt2/tokenizer.json"));
  EXPECT_EQ(gpt2->decode(gpt2->encode(mixed)), mixed);
  EXPECT_EQ(gpt2->decode(gpt2->encode(letters)), letters);
}

// ---- hand-worked tokenizer.json files -------------------------------------------------------------------

// A BPE whose words are single ids when the vocabulary has them (ignore_merges), else characters, so
// the ids show where the pre-tokenizer cut.
json word_model(const std::vector<std::string>& pieces) {
  json vocab = json::object();
  for (size_t i = 0; i < pieces.size(); ++i) vocab[pieces[i]] = i;
  return {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array()}, {"ignore_merges", true}};
}

TEST(TokenizerJson, SplitBehaviours) {
  std::vector<std::string> pieces = {"a", "b", "c", "-", "a-", "-b", "--", "-c", "b-"};
  auto ids_for = [&](const std::string& behavior, bool invert) {
    json document = {
        {"model", word_model(pieces)},
        {"pre_tokenizer",
         {{"type", "Split"}, {"pattern", {{"String", "-"}}}, {"behavior", behavior}, {"invert", invert}}}};
    return load_document(document, "split")->encode("a-b--c");
  };
  // matches at 1, 3 and 4: a | - | b | - | - | c
  EXPECT_EQ(ids_for("Isolated", false), (Ids{0, 3, 1, 3, 3, 2}));
  EXPECT_EQ(ids_for("Removed", false), (Ids{0, 1, 2}));
  EXPECT_EQ(ids_for("MergedWithPrevious", false), (Ids{4, 8, 3, 2}));  // a- b- - c
  EXPECT_EQ(ids_for("MergedWithNext", false), (Ids{0, 5, 3, 7}));      // a -b - -c
  EXPECT_EQ(ids_for("Contiguous", false), (Ids{0, 3, 1, 6, 2}));       // a - b -- c
  EXPECT_EQ(ids_for("Removed", true), (Ids{3, 3, 3}));                 // inverted: the letters go
}

TEST(TokenizerJson, RegexSplitUsesUnicodeClasses) {
  json document = {{"model", word_model({"héllo", "wörld", " ", "h", "é", "l", "o", "w", "ö", "r", "d"})},
                   {"pre_tokenizer",
                    {{"type", "Split"},
                     {"pattern", {{"Regex", R"(\p{L}+)"}}},
                     {"behavior", "Isolated"},
                     {"invert", false}}}};
  EXPECT_EQ(load_document(document, "regex")->encode("héllo wörld"), (Ids{0, 2, 1}));
}

TEST(TokenizerJson, MetaspacePrependSchemes) {
  std::vector<std::string> pieces = {"▁hi", "hi", "▁", "h", "i", "<s>", "▁there"};
  auto ids_for = [&](const std::string& scheme) {
    json document = {
        {"model", word_model(pieces)},
        {"added_tokens", {{{"id", 5}, {"content", "<s>"}, {"normalized", false}, {"special", true}}}},
        {"pre_tokenizer",
         {{"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", scheme}, {"split", true}}},
        {"decoder",
         {{"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", scheme}, {"split", true}}}};
    auto tokenizer = load_document(document, "metaspace");
    EXPECT_EQ(tokenizer->decode(tokenizer->encode("hi there")), "hi there") << scheme;
    return tokenizer->encode("hi there<s>hi");
  };
  EXPECT_EQ(ids_for("always"), (Ids{0, 6, 5, 0}));  // every part gets the prefix
  EXPECT_EQ(ids_for("first"), (Ids{0, 6, 5, 1}));   // only the part at the start of the text
  EXPECT_EQ(ids_for("never"), (Ids{1, 6, 5, 1}));
}

TEST(TokenizerJson, AddedTokenFlags) {
  std::vector<std::string> pieces = {"a", "b", " ", "<m>", "ab", "c", "a ", " b", " cab"};
  auto make = [&](bool lstrip, bool rstrip, bool single_word, const std::string& content) {
    json document = {{"model", word_model(pieces)},
                     {"added_tokens",
                      {{{"id", 9},
                        {"content", content},
                        {"lstrip", lstrip},
                        {"rstrip", rstrip},
                        {"single_word", single_word},
                        {"normalized", false},
                        {"special", false}}}}};
    return load_document(document, "added");
  };
  EXPECT_EQ(make(false, false, false, "<m>")->encode("a <m> b"), (Ids{6, 9, 7}));  // "a " <m> " b"
  EXPECT_EQ(make(true, true, false, "<m>")->encode("a <m> b"), (Ids{0, 9, 1}));    // spaces absorbed
  EXPECT_EQ(make(true, false, false, "<m>")->encode("a <m> b"), (Ids{0, 9, 7}));
  // single_word: "ab" inside "cab" is not a separate word, so it stays text
  EXPECT_EQ(make(false, false, true, "ab")->encode("ab cab"), (Ids{9, 8}));
  EXPECT_EQ(make(false, false, false, "ab")->encode("ab cab"), (Ids{9, 2, 5, 9}));
  // longest match wins: with both "<m>" and "<m>>" added, "<m>>" is one token
  json document = {{"model", word_model(pieces)},
                   {"added_tokens",
                    {{{"id", 9}, {"content", "<m>"}, {"normalized", false}, {"special", true}},
                     {{"id", 10}, {"content", "<m>>"}, {"normalized", false}, {"special", true}}}}};
  auto longest = load_document(document, "longest");
  EXPECT_EQ(longest->encode("a<m>>b<m>"), (Ids{0, 10, 1, 9}));
  EXPECT_EQ(longest->decode({0, 10, 1}, true), "a b");  // no decoder: pieces joined by spaces
  EXPECT_EQ(longest->decode({0, 10, 1}, false), "a <m>> b");
}

TEST(TokenizerJson, MergeRanksInBothEncodings) {
  json vocab = {{"a", 0}, {"b", 1}, {"c", 2}, {"ab", 3}, {"bc", 4}};
  auto encode_with = [&](const json& merges) {
    json document = {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}}};
    return load_document(document, "merges")->encode("abc");
  };
  EXPECT_EQ(encode_with(json::array({"a b", "b c"})), (Ids{3, 2}));
  EXPECT_EQ(encode_with(json::array({"b c", "a b"})), (Ids{0, 4}));
  EXPECT_EQ(encode_with(json::array({json::array({"b", "c"}), json::array({"a", "b"})})), (Ids{0, 4}));
}

// A continuing-subword prefix marks every character but a word's first; an end-of-word suffix its last.
TEST(TokenizerJson, SubwordPrefixAndSuffix) {
  json prefixed = {{"model",
                    {{"type", "BPE"},
                     {"vocab", {{"a", 0}, {"##b", 1}, {"##c", 2}, {"ab", 3}, {"abc", 4}}},
                     {"merges", json::array({"a ##b", "ab ##c"})},
                     {"continuing_subword_prefix", "##"}}}};
  EXPECT_EQ(load_document(prefixed, "prefix")->encode("abc"), (Ids{4}));
  EXPECT_EQ(load_document(prefixed, "prefix")->encode("acb"), (Ids{0, 2, 1}));
  json suffixed = {{"model",
                    {{"type", "BPE"},
                     {"vocab", {{"a", 0}, {"b", 1}, {"b</w>", 2}, {"ab</w>", 3}}},
                     {"merges", json::array({"a b</w>"})},
                     {"end_of_word_suffix", "</w>"}}}};
  EXPECT_EQ(load_document(suffixed, "suffix")->encode("ab"), (Ids{3}));
  EXPECT_EQ(load_document(suffixed, "suffix")->encode("bab"), (Ids{1, 3}));
}

TEST(TokenizerJson, ByteFallbackUnknownsAndTemplate) {
  json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}, {"a", 3}, {"<0xE2>", 4}, {"<0x82>", 5}, {"<0xAC>", 6}};
  auto make = [&](bool byte_fallback, bool fuse_unk) {
    json document = {
        {"model",
         {{"type", "BPE"},
          {"vocab", vocab},
          {"merges", json::array()},
          {"unk_token", "<unk>"},
          {"byte_fallback", byte_fallback},
          {"fuse_unk", fuse_unk}}},
        {"added_tokens",
         {{{"id", 1}, {"content", "<s>"}, {"normalized", false}, {"special", true}},
          {{"id", 2}, {"content", "</s>"}, {"normalized", false}, {"special", true}}}},
        {"post_processor",
         {{"type", "TemplateProcessing"},
          {"single",
           {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
            {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
            {{"SpecialToken", {{"id", "</s>"}, {"type_id", 0}}}}}},
          {"pair", json::array()},
          {"special_tokens",
           {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}},
            {"</s>", {{"id", "</s>"}, {"ids", {2}}, {"tokens", {"</s>"}}}}}}}},
        {"decoder", {{"type", "Sequence"}, {"decoders", {{{"type", "ByteFallback"}}, {{"type", "Fuse"}}}}}}};
    return load_document(document, "fallback");
  };
  auto tokenizer = make(true, false);
  EXPECT_EQ(tokenizer->encode("a€a"), (Ids{1, 3, 4, 5, 6, 3, 2}));  // € = E2 82 AC
  EXPECT_EQ(tokenizer->encode("a€a", false), (Ids{3, 4, 5, 6, 3}));
  EXPECT_EQ(tokenizer->decode({1, 3, 4, 5, 6, 3, 2}), "a€a");
  EXPECT_EQ(tokenizer->decode({3, 4, 5, 3}),
            "a\uFFFD\uFFFDa");  // an incomplete sequence: one U+FFFD per byte
  EXPECT_EQ(make(false, false)->encode("axy€", false), (Ids{3, 0, 0, 0}));
  EXPECT_EQ(make(false, true)->encode("axy€a", false), (Ids{3, 0, 3}));  // fused into one unknown
}

TEST(TokenizerJson, NormalizersAndNormalizedAddedTokens) {
  json document = {
      {"model", word_model({"é", "e", "x", "▁", "▁é", "<tag>", "▁<tag>"})},
      {"normalizer",
       {{"type", "Sequence"},
        {"normalizers",
         {{{"type", "NFC"}}, {{"type", "Lowercase"}}, {{"type", "Prepend"}, {"prepend", "▁"}}}}}},
      {"added_tokens", {{{"id", 6}, {"content", "<TAG>"}, {"normalized", true}, {"special", true}}}},
      {"decoder", {{"type", "Replace"}, {"pattern", {{"String", "▁"}}}, {"content", " "}}}};
  auto tokenizer = load_document(document, "normalizers");
  EXPECT_EQ(tokenizer->encode("E\u0301"), (Ids{4}));  // NFC: É, lowercase: é, prepend: ▁é
  // "<TAG>" normalizes to "▁<tag>", found in the normalized text; decoding gives that normalized form,
  // which is then not recognised as special (HF tokenizers 0.23).
  EXPECT_EQ(tokenizer->encode("<TAG>"), (Ids{6}));
  EXPECT_EQ(tokenizer->decode({6, 4}, true), " <tag> é");
}

TEST(TokenizerUnicode, NormalizationForms) {
  EXPECT_EQ(unicode::nfc("e\u0301"), "\u00E9");
  EXPECT_EQ(unicode::nfd("\u00E9"), "e\u0301");
  EXPECT_EQ(unicode::nfc("\u1100\u1161\u11A8"), "\uAC01");  // Hangul L V T -> one syllable
  EXPECT_EQ(unicode::nfd("\uAC01"), "\u1100\u1161\u11A8");
  EXPECT_EQ(unicode::nfc("a\u0323\u0302"), "\u1EAD");  // ậ
  EXPECT_EQ(unicode::nfc("a\u0302\u0323"), "\u1EAD");  // the marks are put in canonical order first
  EXPECT_EQ(unicode::nfc("\u212B"), "\u00C5");         // a singleton decomposition never recomposes to itself
  EXPECT_EQ(unicode::nfc("plain ascii"), "plain ascii");
  EXPECT_EQ(unicode::lowercase("ÅÄÖ ẞ İ ΣΑ"), "åäö ß i\u0307 σα");
}

TEST(TokenizerUnicode, LossyUtf8UsesMaximalSubparts) {
  EXPECT_TRUE(unicode::is_valid_utf8("naïve 東京 🙂"));
  EXPECT_FALSE(unicode::is_valid_utf8("\xED\xA0\x80"));  // an encoded surrogate
  EXPECT_EQ(unicode::to_valid_utf8("\xF0\x80\x80"), "\uFFFD\uFFFD\uFFFD");
  EXPECT_EQ(unicode::to_valid_utf8("\xF0\x9F\x99"), "\uFFFD");  // a truncated 4-byte sequence
  EXPECT_EQ(unicode::to_valid_utf8("a\xE2\x82z"), "a\uFFFDz");
}

// ---- malformed files ------------------------------------------------------------------------------------

// Loading `text` as a tokenizer.json fails with a message containing each of `needles`.
void expect_load_error(const std::string& text, const std::vector<std::string>& needles) {
  TempDir dir("tok_malformed");
  fs::path file = dir.path / "tokenizer.json";
  std::ofstream(file) << text;
  try {
    load_tokenizer(file.string());
    ADD_FAILURE() << "no error for: " << text;
  } catch (const Error& e) {
    std::string message = e.what();
    EXPECT_NE(message.find(file.string()), std::string::npos) << message;
    for (const auto& needle : needles) EXPECT_NE(message.find(needle), std::string::npos) << message;
  }
}

TEST(TokenizerJson, MalformedFilesNameFileAndKey) {
  const std::string model =
      R"("model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]})";
  expect_load_error(R"({"model": {"type": "BPE", "vocab": {"a": 0)", {"malformed JSON"});
  expect_load_error("[1, 2]", {"expected a JSON object"});
  expect_load_error(R"({"normalizer": null})", {"missing key \"model\""});
  expect_load_error(R"({"model": {"type": "BPE", "merges": []}})", {"model", "\"vocab\""});
  expect_load_error(R"({"model": {"type": "WordPiece", "vocab": {}}})", {"WordPiece"});
  expect_load_error(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}})",
                    {"model.merges[0]"});
  expect_load_error(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b c"]}})",
                    {"model.merges[0]"});
  expect_load_error(R"({"model": {"type": "BPE", "vocab": {"a": "zero"}, "merges": []}})",
                    {"model.vocab", "\"a\""});
  expect_load_error(
      "{" + model + R"(, "normalizer": {"type": "Sequence", "normalizers": [{"type": "Fancy"}]}})",
      {"normalizer.normalizers[0]", "Fancy"});
  expect_load_error("{" + model + R"(, "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(unclosed"},
                    "behavior": "Isolated"}})",
                    {"pre_tokenizer.pattern", "(unclosed"});
  expect_load_error("{" + model + R"(, "pre_tokenizer": {"type": "Split", "pattern": {"String": "-"},
                    "behavior": "Sideways"}})",
                    {"pre_tokenizer.behavior", "Sideways"});
  expect_load_error("{" + model + R"(, "decoder": {"type": "CTC"}})", {"decoder", "CTC"});
  expect_load_error("{" + model + R"(, "post_processor": {"type": "TemplateProcessing", "single": [
                    {"SpecialToken": {"id": "<s>", "type_id": 0}}], "special_tokens": {}}})",
                    {"post_processor.single[0]", "<s>"});
  expect_load_error("{" + model + R"(, "added_tokens": [{"id": 3}]})", {"added_tokens[0]", "content"});
}

TEST(TokenizerLoad, MissingOrUnknownPaths) {
  EXPECT_THROW(load_tokenizer("/nonexistent/tokenizer.json"), Error);
  TempDir empty("tok_empty");
  EXPECT_THROW(load_tokenizer(empty.path.string()), Error);
  try {
    load_tokenizer(shared_path("data/hhh_alignment.jsonl"));
    ADD_FAILURE() << "a .jsonl loaded as a tokenizer";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("hhh_alignment.jsonl"), std::string::npos);
  }
}

}  // namespace
}  // namespace grm
