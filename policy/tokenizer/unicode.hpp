// UTF-8 and the few Unicode algorithms the tokenizers need, self-contained (no ICU): lossy decoding as
// Python's bytes.decode("utf-8", "replace") and Rust's String::from_utf8_lossy do it, canonical
// normalization forms NFC/NFD, per-character lowercase and the White_Space property. The data comes from
// tokenizer_unicode_tables.inc, generated from Python's unicodedata by tokenizer_unicode_tables.py.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace grm::unicode {

constexpr char32_t kReplacementCharacter = 0xFFFD;

// Decodes the code point starting at text[pos] and advances pos past it. text must be valid UTF-8.
char32_t next_code_point(std::string_view text, size_t& pos);
// Byte length of the UTF-8 sequence whose lead byte is `lead` (1 for a stray continuation byte).
size_t sequence_length(unsigned char lead);
void append_utf8(std::string& out, char32_t code_point);
// Start of the character that ends at text[end - 1]; end > 0.
size_t previous_char_start(std::string_view text, size_t end);

bool is_valid_utf8(std::string_view bytes);
// Replaces every maximal ill-formed subsequence with U+FFFD (the Unicode "maximal subpart" practice).
std::string to_valid_utf8(std::string_view bytes);

std::string nfd(std::string_view text);  // canonical decomposition, canonically ordered
std::string nfc(std::string_view text);  // canonical decomposition followed by canonical composition
// Each character mapped to its full lowercase form, context-free (no final-sigma rule), like Rust's
// char::to_lowercase that HF tokenizers' Lowercase normalizer applies.
std::string lowercase(std::string_view text);

bool is_whitespace(char32_t code_point);  // the White_Space property (Rust's char::is_whitespace)

}  // namespace grm::unicode
