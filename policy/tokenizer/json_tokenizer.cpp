// The tokenizer.json tokenizer, step for step as HF tokenizers runs it:
//   1. added tokens with normalized=false are found in the raw text (leftmost-longest, with their
//      single_word / lstrip / rstrip flags) and cut out;
//   2. every other part is normalized on its own, then added tokens with normalized=true are found in it;
//   3. the remaining parts are pre-tokenized into words, and the BPE model turns each word into ids;
//   4. the post-processor's special ids go around the result when add_special_tokens is set.
// Decoding maps ids to pieces (added tokens first) and runs the decoder chain. The steps themselves are in
// tokenizer_components.cpp; component types outside their set are an error naming the type.
#include <algorithm>
#include <array>
#include <fstream>
#include <unordered_map>
#include <unordered_set>

#include "core/error.hpp"
#include "policy/tokenizer/bpe.hpp"
#include "policy/tokenizer/components.hpp"
#include "policy/tokenizer/loaders.hpp"
#include "policy/tokenizer/regex.hpp"
#include "policy/tokenizer/unicode.hpp"

namespace grm {
namespace {

using hf::Decoder;
using hf::json;
using hf::Node;
using hf::Normalizer;
using hf::PreTokenizer;
using hf::SpecialFrame;
using hf::Word;

// ---- added tokens ---------------------------------------------------------------------------------------

struct AddedToken {
  int64_t id;
  std::string content;
  bool single_word, lstrip, rstrip, normalized, special;
  std::string decoded;  // the string decode() gives it: the normalized content for normalized tokens
};

// Finds added tokens in a text: at each position the longest token starting there (a byte trie), so
// scanning left to right gives Aho-Corasick's leftmost-longest matches.
class AddedTokenMatcher {
 public:
  void add(std::string_view pattern, int32_t token) {
    if (pattern.empty()) return;
    int32_t node = 0;
    for (char c : pattern) {
      auto& children = nodes_[size_t(node)].children;
      auto it = std::find_if(children.begin(), children.end(), [&](const auto& e) { return e.first == c; });
      if (it != children.end()) {
        node = it->second;
      } else {
        int32_t child = int32_t(nodes_.size());
        nodes_[size_t(node)].children.emplace_back(c, child);
        nodes_.emplace_back();
        node = child;
      }
    }
    if (nodes_[size_t(node)].token < 0) nodes_[size_t(node)].token = token;
    first_bytes_[static_cast<unsigned char>(pattern[0])] = true;
  }
  bool empty() const { return nodes_.size() == 1; }
  // The longest token starting at text[pos]: (token, length), or (-1, 0).
  std::pair<int32_t, size_t> longest_at(std::string_view text, size_t pos) const {
    std::pair<int32_t, size_t> best{-1, 0};
    if (!first_bytes_[static_cast<unsigned char>(text[pos])]) return best;
    int32_t node = 0;
    for (size_t i = pos; i < text.size(); ++i) {
      const auto& children = nodes_[size_t(node)].children;
      auto it =
          std::find_if(children.begin(), children.end(), [&](const auto& e) { return e.first == text[i]; });
      if (it == children.end()) break;
      node = it->second;
      if (nodes_[size_t(node)].token >= 0) best = {nodes_[size_t(node)].token, i + 1 - pos};
    }
    return best;
  }

 private:
  struct TrieNode {
    std::vector<std::pair<char, int32_t>> children;
    int32_t token = -1;
  };
  std::vector<TrieNode> nodes_{1};
  std::array<bool, 256> first_bytes_{};
};

bool is_word_character(std::string_view text, size_t pos) {
  static const TextPattern word = TextPattern::regex(R"(\w)", "added-token word check");
  return word.matches_at(text, pos);
}

// ---- the tokenizer --------------------------------------------------------------------------------------

class JsonTokenizer : public Tokenizer {
 public:
  // `source` names the file(s) the document came from, for error messages.
  JsonTokenizer(const json& document, const std::string& source);

  std::vector<int64_t> encode(std::string_view text, bool add_special_tokens) const override {
    return encode_cached(text, add_special_tokens, nullptr);
  }
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const override;
  std::string id_to_piece(int64_t id) const override;
  std::optional<int64_t> piece_to_id(std::string_view piece) const override;
  int64_t vocab_size() const override { return vocab_size_; }

 protected:
  std::vector<int64_t> encode_cached(std::string_view text, bool add_special_tokens,
                                     BpeCache* cache) const override;

 private:
  // Calls on_part(part, token, at_start) for each part of `text` in order: an added token found by
  // `matcher` (token set) or the text between (token null). Empty parts are skipped.
  template <typename Function>
  void split_on_added(std::string_view text, const AddedTokenMatcher& matcher, bool at_start,
                      Function on_part) const;

  std::string file_;
  std::unique_ptr<BpeModel> model_;
  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<Decoder> decoder_;
  SpecialFrame frame_;
  std::vector<AddedToken> added_;
  std::unordered_map<int64_t, size_t> added_by_id_;
  std::unordered_map<std::string, size_t> added_by_content_;
  std::unordered_set<std::string> special_contents_;
  AddedTokenMatcher raw_matcher_, normalized_matcher_;
  int64_t vocab_size_ = 0;
};

std::unique_ptr<BpeModel> make_model(const Node& node) {
  std::string type = node.string_or("type", "BPE");
  if (type != "BPE")
    node.error(
        "model type \"{}\" is not supported (only BPE; SentencePiece models load from tokenizer.model)",
        type);
  if (node.has("dropout") && node.child("dropout").value.get<double>() > 0)
    node.child("dropout").error("BPE dropout makes encoding random; set it to null for inference");
  Node vocab = node.child("vocab");
  if (!vocab.value.is_object()) vocab.error("expected an object of piece -> id");
  std::unordered_map<std::string, int32_t> pieces;
  pieces.reserve(vocab.value.size());
  for (const auto& [piece, id] : vocab.value.items()) {
    if (!id.is_number_integer()) vocab.error("the id of \"{}\" is not an integer", piece);
    pieces.emplace(piece, id.get<int32_t>());
  }
  Node merges = node.array_child("merges");
  std::vector<std::pair<std::string, std::string>> pairs;
  pairs.reserve(merges.value.size());
  for (size_t i = 0; i < merges.value.size(); ++i) {
    const json& merge = merges.value[i];
    if (merge.is_string()) {  // "left right"; pieces with spaces need the pair form
      const auto& line = merge.get_ref<const std::string&>();
      size_t space = line.find(' ');
      if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos)
        merges.at(i).error("expected \"left right\", two pieces separated by one space, got \"{}\"", line);
      pairs.emplace_back(line.substr(0, space), line.substr(space + 1));
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string()) {
      pairs.emplace_back(merge[0].get<std::string>(), merge[1].get<std::string>());
    } else {
      merges.at(i).error("expected \"left right\" or [\"left\", \"right\"]");
    }
  }
  BpeOptions options;
  if (node.has("unk_token")) options.unk_token = node.string("unk_token");
  options.continuing_subword_prefix = node.string_or("continuing_subword_prefix", "");
  options.end_of_word_suffix = node.string_or("end_of_word_suffix", "");
  options.fuse_unk = node.boolean_or("fuse_unk", false);
  options.byte_fallback = node.boolean_or("byte_fallback", false);
  options.ignore_merges = node.boolean_or("ignore_merges", false);
  return std::make_unique<BpeModel>(std::move(pieces), pairs, std::move(options), node.file);
}

JsonTokenizer::JsonTokenizer(const json& document, const std::string& source) : file_(source) {
  Node root{document, file_, ""};
  if (!document.is_object()) root.error("expected a JSON object (is this a tokenizer.json?)");
  try {
    model_ = make_model(root.child("model"));
    if (root.has("normalizer")) normalizer_ = hf::make_normalizer(root.child("normalizer"));
    if (root.has("pre_tokenizer")) pre_tokenizer_ = hf::make_pre_tokenizer(root.child("pre_tokenizer"));
    if (root.has("post_processor")) hf::add_post_processor(root.child("post_processor"), frame_);
    if (root.has("decoder")) decoder_ = hf::make_decoder(root.child("decoder"));
    vocab_size_ = model_->n_ids();
    if (root.has("added_tokens")) {
      Node list = root.array_child("added_tokens");
      for (size_t i = 0; i < list.value.size(); ++i) {
        Node entry = list.at(i);
        AddedToken token{entry.integer("id"),
                         entry.string("content"),
                         entry.boolean_or("single_word", false),
                         entry.boolean_or("lstrip", false),
                         entry.boolean_or("rstrip", false),
                         entry.boolean_or("normalized", true),
                         entry.boolean_or("special", false),
                         {}};
        if (token.id < 0) entry.error("negative id {}", token.id);
        // HF tokenizers 0.23 (the reference) decodes a normalized added token as its normalized form
        // ("▁<unk>" under a Prepend normalizer), which then is no longer recognised as special, so
        // skip_special_tokens keeps it. The TinyStories reference decodings show exactly that.
        token.decoded =
            token.normalized && normalizer_ ? normalizer_->normalize(token.content) : token.content;
        if (token.special) special_contents_.insert(token.content);
        vocab_size_ = std::max(vocab_size_, token.id + 1);
        added_by_id_[token.id] = added_.size();
        added_by_content_[token.content] = added_.size();
        added_.push_back(std::move(token));
      }
      for (size_t i = 0; i < added_.size(); ++i) {
        const auto& token = added_[i];
        if (token.normalized)
          normalized_matcher_.add(token.decoded, int32_t(i));
        else
          raw_matcher_.add(token.content, int32_t(i));
      }
    }
  } catch (const nlohmann::json::exception& e) {
    fail("{}: unexpected structure ({}); re-save the file with HF tokenizers", file_, e.what());
  }
}

template <typename Function>
void JsonTokenizer::split_on_added(std::string_view text, const AddedTokenMatcher& matcher, bool at_start,
                                   Function on_part) const {
  size_t done = 0;  // text before this was handed out
  auto emit_text = [&](size_t end) {
    if (end > done) on_part(text.substr(done, end - done), nullptr, at_start && done == 0);
  };
  if (!matcher.empty()) {
    for (size_t pos = 0; pos < text.size();) {
      auto [index, length] = matcher.longest_at(text, pos);
      if (index < 0) {
        ++pos;
        continue;
      }
      const AddedToken& token = added_[size_t(index)];
      size_t begin = pos, end = pos + length;
      pos = end;  // a rejected match still consumes its text, as the automaton's iterator does
      if (token.single_word) {
        bool word_before = begin > 0 && is_word_character(text, unicode::previous_char_start(text, begin));
        bool word_after = end < text.size() && is_word_character(text, end);
        if (word_before || word_after) continue;
      }
      if (token.lstrip) {  // absorb the whitespace before, but not into an earlier token
        while (begin > done) {
          size_t start = unicode::previous_char_start(text, begin), next = start;
          if (!unicode::is_whitespace(unicode::next_code_point(text, next))) break;
          begin = start;
        }
      }
      if (token.rstrip) {
        while (end < text.size()) {
          size_t next = end;
          if (!unicode::is_whitespace(unicode::next_code_point(text, next))) break;
          end = next;
        }
        pos = end;
      }
      emit_text(begin);
      on_part(text.substr(begin, end - begin), &token, at_start && begin == 0);
      done = end;
    }
  }
  emit_text(text.size());
}

std::vector<int64_t> JsonTokenizer::encode_cached(std::string_view input, bool add_special_tokens,
                                                  BpeCache* cache) const {
  std::string repaired;
  std::string_view text = input;
  if (!unicode::is_valid_utf8(input)) {
    repaired = unicode::to_valid_utf8(input);
    text = repaired;
  }
  std::vector<int64_t> ids;
  std::vector<Word> words;
  split_on_added(
      text, raw_matcher_, true, [&](std::string_view part, const AddedToken* token, bool at_start) {
        if (token) return ids.push_back(token->id);
        std::string normalized = normalizer_ ? normalizer_->normalize(std::string(part)) : std::string(part);
        split_on_added(normalized, normalized_matcher_, at_start,
                       [&](std::string_view sub, const AddedToken* sub_token, bool sub_at_start) {
                         if (sub_token) return ids.push_back(sub_token->id);
                         words.assign(1, Word{std::string(sub), sub_at_start});
                         if (pre_tokenizer_) pre_tokenizer_->split(words);
                         for (const auto& word : words)
                           if (!word.text.empty()) model_->tokenize(word.text, ids, cache);
                       });
      });
  if (!add_special_tokens) return ids;
  std::vector<int64_t> prefix = frame_.prefix, suffix = frame_.suffix;
  apply_overrides(prefix, suffix);
  ids.insert(ids.begin(), prefix.begin(), prefix.end());
  ids.insert(ids.end(), suffix.begin(), suffix.end());
  return ids;
}

std::string JsonTokenizer::decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int64_t id : ids) {
    const std::string* piece = nullptr;
    if (auto it = added_by_id_.find(id); it != added_by_id_.end())
      piece = &added_[it->second].decoded;
    else
      piece = model_->id_to_piece(id);
    if (!piece) continue;  // ids outside the vocabulary are dropped, as HF does
    if (skip_special_tokens && special_contents_.count(*piece)) continue;
    tokens.push_back(*piece);
  }
  if (!decoder_) {
    std::string joined;
    for (size_t i = 0; i < tokens.size(); ++i) joined += (i ? " " : "") + tokens[i];
    return joined;
  }
  decoder_->decode_chain(tokens);
  std::string joined;
  for (const auto& token : tokens) joined += token;
  return joined;
}

std::string JsonTokenizer::id_to_piece(int64_t id) const {
  if (auto it = added_by_id_.find(id); it != added_by_id_.end()) return added_[it->second].content;
  if (const std::string* piece = model_->id_to_piece(id)) return *piece;
  fail("{}: id {} is not in the vocabulary (size {})", file_, id, vocab_size_);
}

std::optional<int64_t> JsonTokenizer::piece_to_id(std::string_view piece) const {
  std::string key(piece);
  if (auto it = added_by_content_.find(key); it != added_by_content_.end()) return added_[it->second].id;
  if (auto id = model_->piece_to_id(key)) return *id;
  return std::nullopt;
}

}  // namespace

std::unique_ptr<Tokenizer> load_json_tokenizer(const std::string& file) {
  return std::make_unique<JsonTokenizer>(read_json_file(file), file);
}

std::unique_ptr<Tokenizer> load_vocab_merges_tokenizer(const std::string& vocab_file,
                                                       const std::string& merges_file) {
  std::string source = vocab_file + " + " + merges_file;
  json vocab = read_json_file(vocab_file);
  std::ifstream in(merges_file, std::ios::binary);
  if (!in) fail("{}: cannot be opened; check the path and permissions", merges_file);
  json merges = json::array();
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line.rfind("#version", 0) == 0) continue;
    merges.push_back(line);
  }
  // What HF's ByteLevelBPETokenizer(vocab, merges) builds, with GPT-2's <|endoftext|> as its special token.
  json document = {
      {"model", {{"type", "BPE"}, {"vocab", std::move(vocab)}, {"merges", std::move(merges)}}},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
      {"post_processor", {{"type", "ByteLevel"}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"added_tokens", json::array()},
  };
  const json& model_vocab = document["model"]["vocab"];
  if (model_vocab.is_object() && model_vocab.contains("<|endoftext|>"))
    document["added_tokens"].push_back({{"id", model_vocab["<|endoftext|>"]},
                                        {"content", "<|endoftext|>"},
                                        {"normalized", false},
                                        {"special", true}});
  return std::make_unique<JsonTokenizer>(document, source);
}

}  // namespace grm
