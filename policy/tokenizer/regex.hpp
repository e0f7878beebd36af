// The text patterns of tokenizer.json (`{"String": ...}` and `{"Regex": ...}`) as one type: a literal
// string, or a regular expression run by PCRE2 with Unicode semantics (UTF + UCP, so \s, \p{L}, \w and
// case folding follow Unicode as HF tokenizers' Oniguruma does), JIT-compiled, safe to share between threads.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

struct pcre2_real_code_8;

namespace grm {

struct TextMatch {
  size_t begin, end;  // byte offsets [begin, end) into the searched text
};

class TextPattern {
 public:
  static TextPattern literal(std::string text);
  // Throws grm::Error quoting `where` (file and key), the pattern and PCRE2's message on a bad regex.
  static TextPattern regex(const std::string& pattern, const std::string& where);

  // Every non-overlapping match, left to right; `text` must be valid UTF-8. An empty literal matches nothing.
  void find_all(std::string_view text, std::vector<TextMatch>& matches) const;
  // Replaces every match with `replacement` (taken literally).
  std::string replace_all(std::string_view text, std::string_view replacement) const;
  // Whether a match starts exactly at text[pos] (anchored there).
  bool matches_at(std::string_view text, size_t pos) const;

 private:
  std::string literal_;
  std::shared_ptr<pcre2_real_code_8> code_;  // null for a literal
};

}  // namespace grm
