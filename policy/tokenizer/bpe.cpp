#include "policy/tokenizer/bpe.hpp"

#include <algorithm>

#include <fmt/format.h>

#include "core/error.hpp"
#include "policy/tokenizer/unicode.hpp"

namespace grm {
namespace {

constexpr char32_t kSmallChars = 0x3000;  // direct id table below this code point (covers U+2581 '▁')
constexpr size_t kMaxCachedWordBytes = 256;
constexpr uint64_t kEmptyKey = ~uint64_t(0);

uint64_t pair_key(int32_t left, int32_t right) {
  return (uint64_t(uint32_t(left)) << 32) | uint32_t(right);
}

struct Symbol {
  int32_t id;
  uint32_t offset;     // byte offset in the word of its character (exact for is_char symbols)
  int32_t prev, next;  // neighbours in the part being merged, -1 at its ends
  bool alive;
  bool is_char;  // one character found as such in the vocabulary (so the word may be cut beside it)
};

struct Candidate {  // a mergeable pair starting at symbol `pos`
  int32_t rank, pos, merged_id;
  // The heap pops the greatest: "less" means a higher rank, then a later position.
  bool operator<(const Candidate& other) const {
    return rank != other.rank ? rank > other.rank : pos > other.pos;
  }
};

// Per-thread working memory of the merge loop, kept between words to avoid reallocating.
thread_local std::vector<Symbol> t_symbols;
thread_local std::vector<Candidate> t_heap;

}  // namespace

template <typename Value>
void IdPairMap<Value>::reserve(size_t n_entries) {
  size_t capacity = 16;
  shift_ = 60;
  while (capacity < n_entries * 2) capacity *= 2, --shift_;
  keys_.assign(capacity, kEmptyKey);
  values_.assign(capacity, Value{});
  mask_ = capacity - 1;
}

// Fibonacci hashing: the top bits of the product depend on every bit of both ids.
template <typename Value>
size_t IdPairMap<Value>::slot_of(uint64_t key) const {
  return size_t((key * 0x9E3779B97F4A7C15ull) >> shift_);
}

template <typename Value>
void IdPairMap<Value>::insert(int32_t left, int32_t right, Value value) {
  uint64_t key = pair_key(left, right);
  size_t slot = slot_of(key);
  while (keys_[slot] != kEmptyKey && keys_[slot] != key) slot = (slot + 1) & mask_;
  keys_[slot] = key;
  values_[slot] = value;
}

template <typename Value>
const Value* IdPairMap<Value>::find(int32_t left, int32_t right) const {
  if (keys_.empty()) return nullptr;
  uint64_t key = pair_key(left, right);
  for (size_t slot = slot_of(key);; slot = (slot + 1) & mask_) {
    if (keys_[slot] == key) return &values_[slot];
    if (keys_[slot] == kEmptyKey) return nullptr;
  }
}

template class IdPairMap<Merge>;
template class IdPairMap<uint8_t>;

const std::vector<int32_t>* BpeCache::find(const std::string& word) const {
  auto it = entries_.find(word);
  return it == entries_.end() ? nullptr : &it->second;
}

void BpeCache::insert(const std::string& word, const std::vector<int32_t>& ids) {
  if (entries_.size() >= kMaxEntries) entries_.clear();
  entries_.emplace(word, ids);
}

BpeModel::BpeModel(std::unordered_map<std::string, int32_t> vocab,
                   const std::vector<std::pair<std::string, std::string>>& merges, BpeOptions options,
                   const std::string& where)
    : vocab_(std::move(vocab)), options_(std::move(options)) {
  int32_t max_id = -1;
  for (const auto& [piece, id] : vocab_) {
    if (id < 0) fail("{}: model.vocab gives \"{}\" the negative id {}; ids must be >= 0", where, piece, id);
    max_id = std::max(max_id, id);
  }
  pieces_.assign(size_t(max_id + 1), std::string());
  has_piece_.assign(size_t(max_id + 1), false);
  for (const auto& [piece, id] : vocab_) {
    pieces_[size_t(id)] = piece;
    has_piece_[size_t(id)] = true;
  }
  byte_ids_.assign(256, -1);
  for (int b = 0; b < 256; ++b) {
    auto it = vocab_.find(fmt::format("<0x{:02X}>", b));
    if (it != vocab_.end()) byte_ids_[size_t(b)] = it->second;
  }
  if (options_.unk_token) {
    auto it = vocab_.find(*options_.unk_token);
    if (it != vocab_.end()) unk_id_ = it->second;
  }

  merges_.reserve(merges.size());
  size_t prefix_length = options_.continuing_subword_prefix.size();
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [left, right] = merges[rank];
    auto left_it = vocab_.find(left), right_it = vocab_.find(right);
    if (left_it == vocab_.end() || right_it == vocab_.end())
      fail(
          "{}: model.merges[{}] (\"{}\" \"{}\") uses a piece missing from model.vocab; the file is "
          "inconsistent",
          where, rank, left, right);
    // The right piece carries the continuing-subword prefix, which the merged piece has only once.
    std::string merged = left + right.substr(std::min(prefix_length, right.size()));
    auto merged_it = vocab_.find(merged);
    if (merged_it == vocab_.end())
      fail("{}: model.merges[{}] merges \"{}\" and \"{}\" into \"{}\", which is not in model.vocab", where,
           rank, left, right, merged);
    // a repeated pair takes its later rank, as HF's map construction does
    merges_.insert(left_it->second, right_it->second, Merge{int32_t(rank), merged_it->second});
  }

  if (!options_.continuing_subword_prefix.empty() || !options_.end_of_word_suffix.empty()) return;
  std::unordered_map<char32_t, int32_t> char_ids;  // single-character pieces
  small_char_ids_.assign(kSmallChars, -1);
  for (const auto& [piece, id] : vocab_) {
    size_t pos = 0;
    char32_t c = unicode::next_code_point(piece, pos);
    if (pos != piece.size()) continue;
    char_ids[c] = id;
    if (c < kSmallChars) small_char_ids_[c] = id;
  }
  std::vector<std::pair<int32_t, int32_t>> adjacent;
  for (const auto& [piece, id] : vocab_) {
    int32_t previous = -1;
    for (size_t pos = 0; pos < piece.size();) {
      auto it = char_ids.find(unicode::next_code_point(piece, pos));
      int32_t current = it == char_ids.end() ? -1 : it->second;
      if (previous >= 0 && current >= 0) adjacent.emplace_back(previous, current);
      previous = current;
    }
  }
  joinable_.reserve(adjacent.size());
  for (auto [left, right] : adjacent) joinable_.insert(left, right, 1);
  cut_words_ = true;
}

std::optional<int32_t> BpeModel::piece_to_id(const std::string& piece) const {
  auto it = vocab_.find(piece);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::id_to_piece(int64_t id) const {
  if (id < 0 || id >= n_ids() || !has_piece_[size_t(id)]) return nullptr;
  return &pieces_[size_t(id)];
}

int32_t BpeModel::symbol_id(std::string_view character, char32_t code_point, bool is_first,
                            bool is_last) const {
  if (!small_char_ids_.empty() && code_point < kSmallChars) return small_char_ids_[code_point];
  std::string piece;
  if (!is_first) piece += options_.continuing_subword_prefix;
  piece += character;
  if (is_last) piece += options_.end_of_word_suffix;
  auto it = vocab_.find(piece);
  return it == vocab_.end() ? -1 : it->second;
}

void BpeModel::merge_word(std::string_view word, std::vector<int32_t>& out, BpeCache* cache) const {
  auto& symbols = t_symbols;
  symbols.clear();
  uint32_t offset = 0;
  auto add = [&](int32_t id, bool is_char) { symbols.push_back({id, offset, -1, -1, true, is_char}); };

  // An unknown run waits here: HF emits it before the next known character, but after any byte tokens
  // that come first (its byte-fallback branch does not flush it), and we reproduce that order.
  bool unknown_pending = false;
  for (size_t pos = 0; pos < word.size();) {
    size_t start = pos;
    char32_t code_point = unicode::next_code_point(word, pos);
    std::string_view character = word.substr(start, pos - start);
    int32_t id = symbol_id(character, code_point, start == 0, pos == word.size());
    if (id >= 0) {
      if (unknown_pending) add(*unk_id_, false);
      offset = uint32_t(start);
      unknown_pending = false;
      add(id, true);
      continue;
    }
    if (options_.byte_fallback) {
      std::string piece;
      if (start != 0) piece += options_.continuing_subword_prefix;
      piece += character;
      if (pos == word.size()) piece += options_.end_of_word_suffix;
      bool all_bytes = std::all_of(piece.begin(), piece.end(),
                                   [&](char b) { return byte_ids_[static_cast<unsigned char>(b)] >= 0; });
      if (all_bytes) {
        offset = uint32_t(start);
        for (char b : piece) add(byte_ids_[static_cast<unsigned char>(b)], false);
        continue;
      }
    }
    if (!options_.unk_token) continue;  // HF drops characters it can represent in no way
    if (!unk_id_)
      fail("BPE model: unk_token \"{}\" is not in model.vocab; add it or remove unk_token",
           *options_.unk_token);
    if (unknown_pending && !options_.fuse_unk) add(*unk_id_, false);
    offset = uint32_t(start);
    unknown_pending = true;
  }
  if (unknown_pending) add(*unk_id_, false);

  out.clear();
  // A part's ids depend on its text alone, so parts share the word cache.
  auto merge_cached = [&](size_t begin, size_t end) {
    if (!cache || end - begin < 3) return merge_part(begin, end, out);
    // parts other than the first start at a character symbol, whose offset is exact
    size_t text_begin = begin == 0 ? 0 : symbols[begin].offset;
    size_t text_end = end < symbols.size() ? symbols[end].offset : word.size();
    std::string text(word.substr(text_begin, text_end - text_begin));
    if (const auto* hit = cache->find(text)) {
      out.insert(out.end(), hit->begin(), hit->end());
      return;
    }
    size_t first = out.size();
    merge_part(begin, end, out);
    cache->insert(text, std::vector<int32_t>(out.begin() + long(first), out.end()));
  };
  size_t begin = 0;
  for (size_t i = 1; cut_words_ && i < symbols.size(); ++i) {
    const Symbol& left = symbols[i - 1];
    const Symbol& right = symbols[i];
    if (left.is_char && right.is_char && !joinable_.find(left.id, right.id)) {
      merge_cached(begin, i);
      begin = i;
    }
  }
  merge_cached(begin, symbols.size());
}

void BpeModel::merge_part(size_t begin, size_t end, std::vector<int32_t>& out) const {
  auto& symbols = t_symbols;
  if (end - begin == 1) {
    out.push_back(symbols[begin].id);
    return;
  }
  for (size_t i = begin; i < end; ++i) {
    symbols[i].prev = i > begin ? int32_t(i - 1) : -1;
    symbols[i].next = i + 1 < end ? int32_t(i + 1) : -1;
  }
  auto& heap = t_heap;  // a max-heap under Candidate::operator<
  heap.clear();
  auto push_pair = [&](int32_t left_pos, int32_t right_pos) {
    if (const Merge* merge = merges_.find(symbols[size_t(left_pos)].id, symbols[size_t(right_pos)].id)) {
      heap.push_back({merge->rank, left_pos, merge->merged_id});
      std::push_heap(heap.begin(), heap.end());
    }
  };
  for (size_t i = begin; i + 1 < end; ++i) push_pair(int32_t(i), int32_t(i + 1));
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end());
    Candidate top = heap.back();
    heap.pop_back();
    Symbol& left = symbols[size_t(top.pos)];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = symbols[size_t(left.next)];
    // Skip entries made stale by an earlier merge that changed either side of the pair.
    const Merge* current = merges_.find(left.id, right.id);
    if (!current || current->merged_id != top.merged_id) continue;
    left.id = top.merged_id;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) symbols[size_t(right.next)].prev = top.pos;
    if (left.prev >= 0) push_pair(left.prev, top.pos);
    if (left.next >= 0) push_pair(top.pos, left.next);
  }
  for (size_t i = begin; i < end; ++i)
    if (symbols[i].alive) out.push_back(symbols[i].id);
}

void BpeModel::tokenize(const std::string& word, std::vector<int64_t>& ids, BpeCache* cache) const {
  if (options_.ignore_merges) {
    auto it = vocab_.find(word);
    if (it != vocab_.end()) {
      ids.push_back(it->second);
      return;
    }
  }
  bool cacheable = cache && word.size() < kMaxCachedWordBytes;
  if (cacheable) {
    if (const auto* hit = cache->find(word)) {
      ids.insert(ids.end(), hit->begin(), hit->end());
      return;
    }
  }
  thread_local std::vector<int32_t> word_ids;
  merge_word(word, word_ids, cacheable ? nullptr : cache);  // parts of a long word are cached instead
  ids.insert(ids.end(), word_ids.begin(), word_ids.end());
  if (cacheable) cache->insert(word, word_ids);
}

}  // namespace grm
