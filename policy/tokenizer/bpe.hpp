// The BPE model of HF tokenizers: a pre-token (a "word") is split into characters, each mapped to its
// vocabulary id (or to byte tokens <0xAB> with byte_fallback, or to the unknown token), then the
// lowest-ranked adjacent pair is merged until no ranked pair is left (a min-heap over candidate pairs,
// O(n log n) per word). Results are memoised per word in a caller-owned cache, one per thread.
//
// Speed-up for long words (tokenizers without a pre-tokenizer see whole texts as one word): between two
// characters that appear next to each other in no vocabulary piece, no merge can ever join the symbols on
// either side (a merge's result is a piece, which would contain them), so the word is cut there and each
// part merged on its own, with the same result as merging the whole. Parts are memoised like words.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace grm {

struct BpeOptions {
  std::optional<std::string> unk_token;
  std::string continuing_subword_prefix;  // prepended to every character but a word's first
  std::string end_of_word_suffix;         // appended to a word's last character
  bool fuse_unk = false;                  // consecutive unknown characters become one unknown token
  bool byte_fallback = false;             // unknown characters become their UTF-8 bytes as <0xAB> tokens
  bool ignore_merges = false;             // a word that is itself in the vocabulary is one token
};

// Word -> ids memo. Not thread-safe: each thread keeps its own.
class BpeCache {
 public:
  const std::vector<int32_t>* find(const std::string& word) const;
  void insert(const std::string& word, const std::vector<int32_t>& ids);

 private:
  static constexpr size_t kMaxEntries = 1 << 17;  // then it starts over, bounding memory
  std::unordered_map<std::string, std::vector<int32_t>> entries_;
};

// Open-addressing map from a pair of ids to a value; the merge loop's hot lookup.
template <typename Value>
class IdPairMap {
 public:
  void reserve(size_t n_entries);
  void insert(int32_t left, int32_t right, Value value);  // replaces an existing entry
  const Value* find(int32_t left, int32_t right) const;

 private:
  size_t slot_of(uint64_t key) const;
  std::vector<uint64_t> keys_;
  std::vector<Value> values_;
  uint64_t mask_ = 0;
  int shift_ = 60;  // 64 - log2(capacity)
};

struct Merge {
  int32_t rank, merged_id;
};

class BpeModel {
 public:
  // merges: pairs of pieces, highest priority first. `where` names the file for error messages.
  BpeModel(std::unordered_map<std::string, int32_t> vocab,
           const std::vector<std::pair<std::string, std::string>>& merges, BpeOptions options,
           const std::string& where);

  // Appends the ids of one word; `cache` may be null.
  void tokenize(const std::string& word, std::vector<int64_t>& ids, BpeCache* cache) const;

  std::optional<int32_t> piece_to_id(const std::string& piece) const;
  const std::string* id_to_piece(int64_t id) const;          // null when the id is not in the vocabulary
  int64_t n_ids() const { return int64_t(pieces_.size()); }  // 1 + the largest id

 private:
  void merge_word(std::string_view word, std::vector<int32_t>& out, BpeCache* cache) const;
  // Merges symbols [begin, end) of the current word, appending the resulting ids.
  void merge_part(size_t begin, size_t end, std::vector<int32_t>& out) const;
  int32_t symbol_id(std::string_view character, char32_t code_point, bool is_first, bool is_last) const;

  std::unordered_map<std::string, int32_t> vocab_;
  std::vector<std::string> pieces_;  // id -> piece ("" for ids the vocabulary skips)
  std::vector<bool> has_piece_;
  std::vector<int32_t> small_char_ids_;  // code point < kSmallChars -> id or -1, when no prefix/suffix
  std::vector<int32_t> byte_ids_;        // byte -> id of <0xAB>, or -1
  std::optional<int32_t> unk_id_;
  BpeOptions options_;
  IdPairMap<Merge> merges_;  // (left id, right id) -> rank and merged id
  // Pairs of single-character ids that are adjacent in some piece; words are cut between the others.
  // Empty (no cutting) with a continuing-subword prefix or end-of-word suffix.
  IdPairMap<uint8_t> joinable_;  // used as a set
  bool cut_words_ = false;
};

}  // namespace grm
