#include "policy/tokenizer/unicode.hpp"

#include <algorithm>
#include <cstdint>
#include <vector>

namespace grm::unicode {
namespace {

struct CombiningClassRange {
  char32_t first, last;
  uint8_t combining_class;
};
struct Decomposition {  // code_point -> data[offset, offset + length)
  char32_t code_point;
  uint16_t offset, length;
};
struct Composition {  // (first, second) -> composite, sorted by (first, second)
  char32_t first, second, composite;
};

#include "policy/tokenizer/unicode_tables.inc"

// Hangul syllables decompose and compose arithmetically (Unicode chapter 3.12).
constexpr char32_t kHangulS = 0xAC00, kHangulL = 0x1100, kHangulV = 0x1161, kHangulT = 0x11A7;
constexpr char32_t kHangulLCount = 19, kHangulVCount = 21, kHangulTCount = 28;
constexpr char32_t kHangulNCount = kHangulVCount * kHangulTCount,
                   kHangulSCount = kHangulLCount * kHangulNCount;

uint8_t combining_class(char32_t c) {
  if (c < 0x300) return 0;
  auto it = std::upper_bound(std::begin(kCombiningClasses), std::end(kCombiningClasses), c,
                             [](char32_t v, const CombiningClassRange& r) { return v < r.first; });
  if (it == std::begin(kCombiningClasses)) return 0;
  --it;
  return c <= it->last ? it->combining_class : 0;
}

const Decomposition* find_mapping(const Decomposition* begin, const Decomposition* end, char32_t c) {
  auto it =
      std::lower_bound(begin, end, c, [](const Decomposition& d, char32_t v) { return d.code_point < v; });
  return it != end && it->code_point == c ? it : nullptr;
}

void decompose(char32_t c, std::vector<char32_t>& out) {
  if (c >= kHangulS && c < kHangulS + kHangulSCount) {
    char32_t index = c - kHangulS;
    out.push_back(kHangulL + index / kHangulNCount);
    out.push_back(kHangulV + (index % kHangulNCount) / kHangulTCount);
    if (index % kHangulTCount != 0) out.push_back(kHangulT + index % kHangulTCount);
    return;
  }
  if (c >= 0xC0) {
    if (const auto* d = find_mapping(std::begin(kDecompositions), std::end(kDecompositions), c)) {
      out.insert(out.end(), kDecompositionData + d->offset, kDecompositionData + d->offset + d->length);
      return;
    }
  }
  out.push_back(c);
}

char32_t compose_pair(char32_t first, char32_t second) {
  if (first >= kHangulL && first < kHangulL + kHangulLCount && second >= kHangulV &&
      second < kHangulV + kHangulVCount)
    return kHangulS + ((first - kHangulL) * kHangulVCount + (second - kHangulV)) * kHangulTCount;
  if (first >= kHangulS && first < kHangulS + kHangulSCount && (first - kHangulS) % kHangulTCount == 0 &&
      second > kHangulT && second < kHangulT + kHangulTCount)
    return first + (second - kHangulT);
  auto it =
      std::lower_bound(std::begin(kCompositions), std::end(kCompositions), std::make_pair(first, second),
                       [](const Composition& c, const std::pair<char32_t, char32_t>& v) {
                         return c.first != v.first ? c.first < v.first : c.second < v.second;
                       });
  if (it != std::end(kCompositions) && it->first == first && it->second == second) return it->composite;
  return 0;
}

// Full canonical decomposition with combining marks in canonical order.
std::vector<char32_t> canonical_decomposition(std::string_view text) {
  std::vector<char32_t> out;
  out.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) decompose(next_code_point(text, pos), out);
  // Stable-sort each run of non-starters by combining class (canonical ordering algorithm).
  for (size_t i = 0; i < out.size();) {
    if (combining_class(out[i]) == 0) {
      ++i;
      continue;
    }
    size_t end = i;
    while (end < out.size() && combining_class(out[end]) != 0) ++end;
    std::stable_sort(out.begin() + long(i), out.begin() + long(end),
                     [](char32_t a, char32_t b) { return combining_class(a) < combining_class(b); });
    i = end;
  }
  return out;
}

std::string encode(const std::vector<char32_t>& code_points) {
  std::string out;
  out.reserve(code_points.size());
  for (char32_t c : code_points) append_utf8(out, c);
  return out;
}

// Below U+0300 there are no combining marks, so such text is already in NFC.
bool all_below_combining_marks(std::string_view text) {
  for (size_t pos = 0; pos < text.size();)
    if (next_code_point(text, pos) >= 0x300) return false;
  return true;
}

}  // namespace

size_t sequence_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xF0) return 4;
  if (lead >= 0xE0) return 3;
  if (lead >= 0xC0) return 2;
  return 1;
}

char32_t next_code_point(std::string_view text, size_t& pos) {
  auto byte = [&](size_t i) { return char32_t(static_cast<unsigned char>(text[i])); };
  char32_t lead = byte(pos);
  size_t n = sequence_length(static_cast<unsigned char>(lead));
  if (pos + n > text.size()) n = 1;  // only reachable on invalid input; never reads past the end
  char32_t c;
  switch (n) {
    case 1:
      c = lead;
      break;
    case 2:
      c = ((lead & 0x1F) << 6) | (byte(pos + 1) & 0x3F);
      break;
    case 3:
      c = ((lead & 0x0F) << 12) | ((byte(pos + 1) & 0x3F) << 6) | (byte(pos + 2) & 0x3F);
      break;
    default:
      c = ((lead & 0x07) << 18) | ((byte(pos + 1) & 0x3F) << 12) | ((byte(pos + 2) & 0x3F) << 6) |
          (byte(pos + 3) & 0x3F);
  }
  pos += n;
  return c;
}

size_t previous_char_start(std::string_view text, size_t end) {
  size_t start = end - 1;
  while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
  return start;
}

void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out += char(c);
  } else if (c < 0x800) {
    out += char(0xC0 | (c >> 6));
    out += char(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += char(0xE0 | (c >> 12));
    out += char(0x80 | ((c >> 6) & 0x3F));
    out += char(0x80 | (c & 0x3F));
  } else {
    out += char(0xF0 | (c >> 18));
    out += char(0x80 | ((c >> 12) & 0x3F));
    out += char(0x80 | ((c >> 6) & 0x3F));
    out += char(0x80 | (c & 0x3F));
  }
}

namespace {

// Length of the well-formed sequence at bytes[pos], or 0 if ill-formed; `valid_prefix` receives the
// length of the maximal subpart (at least 1) that a replacement character stands for.
size_t well_formed_length(std::string_view bytes, size_t pos, size_t& valid_prefix) {
  auto b = [&](size_t i) { return static_cast<unsigned char>(bytes[i]); };
  unsigned char lead = b(pos);
  valid_prefix = 1;
  if (lead < 0x80) return 1;
  size_t n;
  unsigned char low = 0x80, high = 0xBF;  // allowed range of the second byte (Unicode table 3-7)
  if (lead >= 0xC2 && lead <= 0xDF) {
    n = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    n = 3;
    if (lead == 0xE0) low = 0xA0;
    if (lead == 0xED) high = 0x9F;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    n = 4;
    if (lead == 0xF0) low = 0x90;
    if (lead == 0xF4) high = 0x8F;
  } else {
    return 0;
  }
  for (size_t k = 1; k < n; ++k) {
    if (pos + k >= bytes.size()) return 0;
    unsigned char c = b(pos + k);
    bool ok = k == 1 ? (c >= low && c <= high) : (c >= 0x80 && c <= 0xBF);
    if (!ok) return 0;
    valid_prefix = k + 1;
  }
  return n;
}

}  // namespace

bool is_valid_utf8(std::string_view bytes) {
  size_t pos = 0, prefix;
  while (pos < bytes.size()) {
    if (static_cast<unsigned char>(bytes[pos]) < 0x80) {
      ++pos;
      continue;
    }
    size_t n = well_formed_length(bytes, pos, prefix);
    if (n == 0) return false;
    pos += n;
  }
  return true;
}

std::string to_valid_utf8(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t pos = 0, prefix;
  while (pos < bytes.size()) {
    size_t n = well_formed_length(bytes, pos, prefix);
    if (n == 0) {
      append_utf8(out, kReplacementCharacter);
      pos += prefix;
    } else {
      out.append(bytes.substr(pos, n));
      pos += n;
    }
  }
  return out;
}

std::string nfd(std::string_view text) {
  bool ascii =
      std::all_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
  if (ascii) return std::string(text);
  return encode(canonical_decomposition(text));
}

std::string nfc(std::string_view text) {
  if (all_below_combining_marks(text)) return std::string(text);
  std::vector<char32_t> chars = canonical_decomposition(text);
  // Canonical composition (UAX #15): each character either combines with the last starter, if nothing
  // between them blocks it, or is kept.
  size_t kept = 0;
  size_t starter = 0;
  bool have_starter = false;
  int last_class = -1;  // class of the last kept character after the starter; -1: none
  for (char32_t c : chars) {
    int cls = combining_class(c);
    if (have_starter) {
      bool blocked = last_class != -1 && last_class >= cls;
      char32_t composite = blocked ? 0 : compose_pair(chars[starter], c);
      if (composite != 0) {
        chars[starter] = composite;
        continue;
      }
    }
    if (cls == 0) {
      starter = kept;
      have_starter = true;
      last_class = -1;
    } else {
      last_class = cls;
    }
    chars[kept++] = c;
  }
  chars.resize(kept);
  return encode(chars);
}

std::string lowercase(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    size_t start = pos;
    char32_t c = next_code_point(text, pos);
    if (c < 0x80) {
      out += (c >= 'A' && c <= 'Z') ? char(c + ('a' - 'A')) : char(c);
    } else if (const auto* m = find_mapping(std::begin(kLowercase), std::end(kLowercase), c)) {
      for (uint16_t k = 0; k < m->length; ++k) append_utf8(out, kLowercaseData[m->offset + k]);
    } else {
      out.append(text.substr(start, pos - start));
    }
  }
  return out;
}

bool is_whitespace(char32_t c) {
  if (c <= 0x20) return c == 0x20 || (c >= 0x09 && c <= 0x0D);
  switch (c) {
    case 0x85:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000:
      return true;
    default:
      return c >= 0x2000 && c <= 0x200A;
  }
}

}  // namespace grm::unicode
