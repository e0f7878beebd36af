#include "policy/tokenizer/components.hpp"

#include <algorithm>
#include <array>

#include "policy/tokenizer/regex.hpp"
#include "policy/tokenizer/unicode.hpp"

namespace grm::hf {
namespace {

// {"String": "..."} or {"Regex": "..."}
TextPattern parse_pattern(const Node& node) {
  if (node.has("String")) return TextPattern::literal(node.string("String"));
  if (node.has("Regex"))
    return TextPattern::regex(node.string("Regex"), fmt::format("{}: {}.Regex", node.file, node.path));
  node.error("expected {{\"String\": ...}} or {{\"Regex\": ...}}");
}

// A single character option such as Metaspace's replacement or Strip's content.
char32_t parse_char(const Node& node, const char* key) {
  std::string text = node.string(key);
  size_t pos = 0;
  char32_t c = text.empty() ? 0 : unicode::next_code_point(text, pos);
  if (text.empty() || pos != text.size())
    node.child(key).error("expected exactly one character, got \"{}\"", text);
  return c;
}

// ---- GPT-2's byte <-> character table -------------------------------------------------------------------

// Bytes that are printable characters stand for themselves; the rest are moved to U+0100 and up, so every
// byte string becomes a printable string and back.
struct ByteLevelTable {
  std::array<std::array<char, 2>, 256> byte_to_utf8;  // every mapped character is below U+0800: 1-2 bytes
  std::array<uint8_t, 256> utf8_length;
  std::vector<int16_t> char_to_byte;  // code point -> byte, -1 for characters outside the table
  ByteLevelTable() : char_to_byte(0x200, -1) {
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      char32_t c = printable ? char32_t(b) : next++;
      std::string utf8;
      unicode::append_utf8(utf8, c);
      std::copy(utf8.begin(), utf8.end(), byte_to_utf8[size_t(b)].begin());
      utf8_length[size_t(b)] = uint8_t(utf8.size());
      char_to_byte[c] = int16_t(b);
    }
  }
};
const ByteLevelTable& byte_level_table() {
  static const ByteLevelTable table;
  return table;
}

// GPT-2's pre-tokenization regex, which ByteLevel applies when use_regex is set.
const TextPattern& gpt2_pattern() {
  static const TextPattern pattern =
      TextPattern::regex(R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)",
                         "ByteLevel pre-tokenizer");
  return pattern;
}

// ---- splitting with a delimiter behaviour (NormalizedString::split) -------------------------------------

enum class SplitBehavior { removed, isolated, merged_with_previous, merged_with_next, contiguous };

SplitBehavior parse_behavior(const Node& node) {
  std::string name = node.string("behavior");
  if (name == "Removed") return SplitBehavior::removed;
  if (name == "Isolated") return SplitBehavior::isolated;
  if (name == "MergedWithPrevious") return SplitBehavior::merged_with_previous;
  if (name == "MergedWithNext") return SplitBehavior::merged_with_next;
  if (name == "Contiguous") return SplitBehavior::contiguous;
  node.child("behavior")
      .error(
          "unknown split behavior \"{}\" (expected Removed, Isolated, MergedWithPrevious, "
          "MergedWithNext or Contiguous)",
          name);
}

struct Span {
  size_t begin, end;
  bool is_match;
};

// The parts of `text` around the pattern's matches, combined as `behavior` says; empty parts dropped.
std::vector<std::pair<size_t, size_t>> split_text(std::string_view text, const TextPattern& pattern,
                                                  SplitBehavior behavior, bool invert) {
  std::vector<TextMatch> matches;
  pattern.find_all(text, matches);
  std::vector<Span> spans;  // covers the text: alternating non-matches and matches
  size_t previous = 0;
  for (const auto& m : matches) {
    if (m.begin != previous) spans.push_back({previous, m.begin, invert});
    spans.push_back({m.begin, m.end, !invert});
    previous = m.end;
  }
  if (previous != text.size()) spans.push_back({previous, text.size(), invert});

  std::vector<Span> parts;  // is_match now means "drop this part"
  bool previous_match = false;
  switch (behavior) {
    case SplitBehavior::isolated:
      for (auto s : spans) parts.push_back({s.begin, s.end, false});
      break;
    case SplitBehavior::removed:
      parts = spans;
      break;
    case SplitBehavior::merged_with_previous:
      for (auto s : spans) {
        if (s.is_match && !previous_match && !parts.empty())
          parts.back().end = s.end;
        else
          parts.push_back({s.begin, s.end, false});
        previous_match = s.is_match;
      }
      break;
    case SplitBehavior::merged_with_next:
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->is_match && !previous_match && !parts.empty())
          parts.back().begin = it->begin;
        else
          parts.push_back({it->begin, it->end, false});
        previous_match = it->is_match;
      }
      std::reverse(parts.begin(), parts.end());
      break;
    case SplitBehavior::contiguous:
      for (auto s : spans) {
        if (s.is_match == previous_match && !parts.empty())
          parts.back().end = s.end;
        else
          parts.push_back({s.begin, s.end, false});
        previous_match = s.is_match;
      }
      break;
  }
  std::vector<std::pair<size_t, size_t>> out;
  for (const auto& p : parts)
    if (!p.is_match && p.end > p.begin) out.emplace_back(p.begin, p.end);
  return out;
}

// ---- normalizers ----------------------------------------------------------------------------------------

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(const Node& node) {
    Node list = node.array_child("normalizers");
    for (size_t i = 0; i < list.value.size(); ++i) steps_.push_back(make_normalizer(list.at(i)));
  }
  std::string normalize(std::string text) const override {
    for (const auto& step : steps_) text = step->normalize(std::move(text));
    return text;
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

class PrependNormalizer : public Normalizer {
 public:
  explicit PrependNormalizer(const Node& node) : prefix_(node.string("prepend")) {}
  std::string normalize(std::string text) const override { return text.empty() ? text : prefix_ + text; }

 private:
  std::string prefix_;
};

class ReplaceNormalizer : public Normalizer {
 public:
  explicit ReplaceNormalizer(const Node& node)
      : pattern_(parse_pattern(node.child("pattern"))), content_(node.string("content")) {}
  std::string normalize(std::string text) const override { return pattern_.replace_all(text, content_); }

 private:
  TextPattern pattern_;
  std::string content_;
};

class FunctionNormalizer : public Normalizer {
 public:
  explicit FunctionNormalizer(std::string (*function)(std::string_view)) : function_(function) {}
  std::string normalize(std::string text) const override { return function_(text); }

 private:
  std::string (*function_)(std::string_view);
};

class StripNormalizer : public Normalizer {
 public:
  explicit StripNormalizer(const Node& node)
      : left_(node.boolean_or("strip_left", true)), right_(node.boolean_or("strip_right", true)) {}
  std::string normalize(std::string text) const override {
    size_t begin = 0, end = text.size();
    if (left_) {
      for (size_t pos = 0; pos < end && unicode::is_whitespace(unicode::next_code_point(text, pos));)
        begin = pos;
    }
    if (right_) {
      while (end > begin) {
        size_t start = unicode::previous_char_start(text, end), pos = start;
        if (!unicode::is_whitespace(unicode::next_code_point(text, pos))) break;
        end = start;
      }
    }
    return text.substr(begin, end - begin);
  }

 private:
  bool left_, right_;
};

}  // namespace

std::unique_ptr<Normalizer> make_normalizer(const Node& node) {
  std::string type = node.type();
  if (type == "Sequence") return std::make_unique<SequenceNormalizer>(node);
  if (type == "Prepend") return std::make_unique<PrependNormalizer>(node);
  if (type == "Replace") return std::make_unique<ReplaceNormalizer>(node);
  if (type == "NFC") return std::make_unique<FunctionNormalizer>(unicode::nfc);
  if (type == "NFD") return std::make_unique<FunctionNormalizer>(unicode::nfd);
  if (type == "Lowercase") return std::make_unique<FunctionNormalizer>(unicode::lowercase);
  if (type == "Strip") return std::make_unique<StripNormalizer>(node);
  node.error(
      "normalizer type \"{}\" is not supported (supported: Sequence, Prepend, Replace, NFC, NFD, "
      "Lowercase, Strip)",
      type);
}

namespace {

// ---- pre-tokenizers -------------------------------------------------------------------------------------

// Replaces every word by the parts `split_one` makes of it; only a word's first part keeps at_start.
template <typename Function>
void split_each(std::vector<Word>& words, Function split_one) {
  std::vector<Word> out;
  std::vector<std::string> parts;
  for (auto& word : words) {
    parts.clear();
    split_one(word, parts);
    for (size_t i = 0; i < parts.size(); ++i) out.push_back({std::move(parts[i]), word.at_start && i == 0});
  }
  words = std::move(out);
}

class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  explicit ByteLevelPreTokenizer(const Node& node)
      : add_prefix_space_(node.boolean_or("add_prefix_space", true)),
        use_regex_(node.boolean_or("use_regex", true)) {}
  void split(std::vector<Word>& words) const override {
    const auto& table = byte_level_table();
    split_each(words, [&](const Word& word, std::vector<std::string>& parts) {
      std::string text = add_prefix_space_ && word.text.rfind(' ', 0) != 0 ? " " + word.text : word.text;
      auto map_bytes = [&](std::string_view part) {
        std::string mapped(part.size() * 2, '\0');
        size_t length = 0;
        for (char c : part) {
          auto b = static_cast<unsigned char>(c);
          mapped[length] = table.byte_to_utf8[b][0];
          mapped[length + 1] = table.byte_to_utf8[b][1];
          length += table.utf8_length[b];
        }
        mapped.resize(length);
        parts.push_back(std::move(mapped));
      };
      if (!use_regex_) return map_bytes(text);
      for (auto [begin, end] : split_text(text, gpt2_pattern(), SplitBehavior::isolated, false))
        map_bytes(std::string_view(text).substr(begin, end - begin));
    });
  }

 private:
  bool add_prefix_space_, use_regex_;
};

class SplitPreTokenizer : public PreTokenizer {
 public:
  explicit SplitPreTokenizer(const Node& node)
      : pattern_(parse_pattern(node.child("pattern"))),
        behavior_(parse_behavior(node)),
        invert_(node.boolean_or("invert", false)) {}
  void split(std::vector<Word>& words) const override {
    split_each(words, [&](const Word& word, std::vector<std::string>& parts) {
      for (auto [begin, end] : split_text(word.text, pattern_, behavior_, invert_))
        parts.push_back(word.text.substr(begin, end - begin));
    });
  }

 private:
  TextPattern pattern_;
  SplitBehavior behavior_;
  bool invert_;
};

enum class PrependScheme { always, first, never };

// Metaspace's prepend_scheme, or for files older than it, add_prefix_space (true meaning "always").
PrependScheme parse_prepend_scheme(const Node& node) {
  if (!node.has("prepend_scheme"))
    return node.boolean_or("add_prefix_space", true) ? PrependScheme::always : PrependScheme::never;
  std::string scheme = node.string("prepend_scheme");
  if (scheme == "always") return PrependScheme::always;
  if (scheme == "first") return PrependScheme::first;
  if (scheme == "never") return PrependScheme::never;
  node.child("prepend_scheme")
      .error("unknown prepend_scheme \"{}\" (expected always, first or never)", scheme);
}

class MetaspacePreTokenizer : public PreTokenizer {
 public:
  explicit MetaspacePreTokenizer(const Node& node)
      : prepend_scheme_(parse_prepend_scheme(node)), split_(node.boolean_or("split", true)) {
    unicode::append_utf8(replacement_, parse_char(node, "replacement"));
    replacement_pattern_ = TextPattern::literal(replacement_);
  }
  void split(std::vector<Word>& words) const override {
    static const TextPattern space = TextPattern::literal(" ");
    split_each(words, [&](const Word& word, std::vector<std::string>& parts) {
      std::string text = space.replace_all(word.text, replacement_);
      bool prepend = prepend_scheme_ == PrependScheme::always ||
                     (prepend_scheme_ == PrependScheme::first && word.at_start);
      if (prepend && text.rfind(replacement_, 0) != 0) text = replacement_ + text;
      if (!split_) return parts.push_back(std::move(text));
      for (auto [begin, end] : split_text(text, replacement_pattern_, SplitBehavior::merged_with_next, false))
        parts.push_back(text.substr(begin, end - begin));
    });
  }

 private:
  std::string replacement_;
  TextPattern replacement_pattern_;
  PrependScheme prepend_scheme_;
  bool split_;
};

class SequencePreTokenizer : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(const Node& node) {
    Node list = node.array_child("pretokenizers");
    for (size_t i = 0; i < list.value.size(); ++i) steps_.push_back(make_pre_tokenizer(list.at(i)));
  }
  void split(std::vector<Word>& words) const override {
    for (const auto& step : steps_) step->split(words);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

}  // namespace

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const Node& node) {
  std::string type = node.type();
  if (type == "ByteLevel") return std::make_unique<ByteLevelPreTokenizer>(node);
  if (type == "Split") return std::make_unique<SplitPreTokenizer>(node);
  if (type == "Metaspace") return std::make_unique<MetaspacePreTokenizer>(node);
  if (type == "Sequence") return std::make_unique<SequencePreTokenizer>(node);
  node.error("pre-tokenizer type \"{}\" is not supported (supported: ByteLevel, Split, Metaspace, Sequence)",
             type);
}

namespace {

// ---- decoders -------------------------------------------------------------------------------------------

class ByteLevelDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    const auto& table = byte_level_table();
    std::string bytes;
    for (const auto& token : tokens) {
      size_t mark = bytes.size();
      bool mapped = true;
      for (size_t pos = 0; pos < token.size() && mapped;) {
        char32_t c = unicode::next_code_point(token, pos);
        int byte = c < table.char_to_byte.size() ? table.char_to_byte[c] : -1;
        if (byte < 0)
          mapped = false;
        else
          bytes += char(byte);
      }
      // A token with a character outside the table (an added token, say) contributes its own bytes.
      if (!mapped) bytes.replace(mark, std::string::npos, token);
    }
    tokens.assign(1, unicode::to_valid_utf8(bytes));
  }
};

class ReplaceDecoder : public Decoder {
 public:
  explicit ReplaceDecoder(const Node& node)
      : pattern_(parse_pattern(node.child("pattern"))), content_(node.string("content")) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (auto& token : tokens) token = pattern_.replace_all(token, content_);
  }

 private:
  TextPattern pattern_;
  std::string content_;
};

// <0xAB> tokens become bytes; a run of them that is not valid UTF-8 becomes one U+FFFD per byte.
class ByteFallbackDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    std::string bytes;
    size_t n_bytes = 0;
    auto flush = [&] {
      if (n_bytes == 0) return;
      if (unicode::is_valid_utf8(bytes)) {
        out.push_back(bytes);
      } else {
        std::string replacement;
        unicode::append_utf8(replacement, unicode::kReplacementCharacter);
        for (size_t i = 0; i < n_bytes; ++i) out.push_back(replacement);
      }
      bytes.clear();
      n_bytes = 0;
    };
    for (auto& token : tokens) {
      int byte = parse_byte_token(token);
      if (byte >= 0) {
        bytes += char(byte);
        ++n_bytes;
      } else {
        flush();
        out.push_back(std::move(token));
      }
    }
    flush();
    tokens = std::move(out);
  }

 private:
  static int parse_byte_token(const std::string& token) {
    if (token.size() != 6 || token.compare(0, 3, "<0x") != 0 || token[5] != '>') return -1;
    int value = 0;
    for (size_t i = 3; i < 5; ++i) {
      char c = token[i];
      int digit = c >= '0' && c <= '9'   ? c - '0'
                  : c >= 'A' && c <= 'F' ? c - 'A' + 10
                  : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                         : -1;
      if (digit < 0) return -1;
      value = value * 16 + digit;
    }
    return value;
  }
};

class FuseDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string joined;
    for (const auto& token : tokens) joined += token;
    tokens.assign(1, std::move(joined));
  }
};

// Removes up to `start` leading and `stop` trailing copies of one character from every token.
class StripDecoder : public Decoder {
 public:
  explicit StripDecoder(const Node& node)
      : start_(size_t(node.integer("start"))), stop_(size_t(node.integer("stop"))) {
    unicode::append_utf8(content_, parse_char(node, "content"));
  }
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (auto& token : tokens) {
      size_t begin = 0, end = token.size();
      for (size_t i = 0; i < start_ && token.compare(begin, content_.size(), content_) == 0 && begin < end;
           ++i)
        begin += content_.size();
      for (size_t i = 0; i < stop_ && end >= begin + content_.size() &&
                         token.compare(end - content_.size(), content_.size(), content_) == 0;
           ++i)
        end -= content_.size();
      token = token.substr(begin, end - begin);
    }
  }

 private:
  std::string content_;
  size_t start_, stop_;
};

// The replacement character becomes a space, except in the first token, where it is dropped (it was the
// prepended one) unless nothing was prepended.
class MetaspaceDecoder : public Decoder {
 public:
  explicit MetaspaceDecoder(const Node& node) : prepend_scheme_(parse_prepend_scheme(node)) {
    unicode::append_utf8(replacement_, parse_char(node, "replacement"));
  }
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string out;
      bool drop = i == 0 && prepend_scheme_ != PrependScheme::never;
      const std::string& token = tokens[i];
      for (size_t pos = 0; pos < token.size();) {
        if (token.compare(pos, replacement_.size(), replacement_) == 0) {
          if (!drop) out += ' ';
          pos += replacement_.size();
        } else {
          out += token[pos++];
        }
      }
      tokens[i] = std::move(out);
    }
  }

 private:
  std::string replacement_;
  PrependScheme prepend_scheme_;
};

class SequenceDecoder : public Decoder {
 public:
  explicit SequenceDecoder(const Node& node) {
    Node list = node.array_child("decoders");
    for (size_t i = 0; i < list.value.size(); ++i) steps_.push_back(make_decoder(list.at(i)));
  }
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (const auto& step : steps_) step->decode_chain(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

}  // namespace

std::unique_ptr<Decoder> make_decoder(const Node& node) {
  std::string type = node.type();
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "Replace") return std::make_unique<ReplaceDecoder>(node);
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip") return std::make_unique<StripDecoder>(node);
  if (type == "Metaspace") return std::make_unique<MetaspaceDecoder>(node);
  if (type == "Sequence") return std::make_unique<SequenceDecoder>(node);
  node.error(
      "decoder type \"{}\" is not supported (supported: ByteLevel, Replace, ByteFallback, Fuse, Strip, "
      "Metaspace, Sequence)",
      type);
}

// ---- post-processors -----------------------------------------------------------------------------------

void add_post_processor(const Node& node, SpecialFrame& frame) {
  std::string type = node.type();
  if (type == "ByteLevel") return;  // trims offsets only
  if (type == "Sequence") {
    Node list = node.array_child("processors");
    for (size_t i = 0; i < list.value.size(); ++i) add_post_processor(list.at(i), frame);
    return;
  }
  SpecialFrame own;
  if (type == "TemplateProcessing") {
    Node single = node.array_child("single");
    Node specials = node.child("special_tokens");
    bool seen_sequence = false;
    for (size_t i = 0; i < single.value.size(); ++i) {
      Node piece = single.at(i);
      if (piece.has("Sequence")) {
        if (seen_sequence) piece.error("the single template names the sequence twice");
        seen_sequence = true;
        continue;
      }
      std::string name = piece.child("SpecialToken").string("id");
      if (!specials.has(name.c_str())) piece.error("special token \"{}\" is not in special_tokens", name);
      Node ids = specials.child(name.c_str()).array_child("ids");
      for (const auto& id : ids.value) {
        if (!id.is_number_integer()) ids.error("expected integer ids");
        (seen_sequence ? own.suffix : own.prefix).push_back(id.get<int64_t>());
      }
    }
    if (!seen_sequence) single.error("the single template has no Sequence piece");
  } else if (type == "RobertaProcessing" || type == "BertProcessing") {
    for (const char* key : {"cls", "sep"}) {
      Node pair = node.array_child(key);
      if (pair.value.size() != 2 || !pair.value[1].is_number_integer())
        pair.error("expected [\"token\", id]");
      (std::string(key) == "cls" ? own.prefix : own.suffix).push_back(pair.value[1].get<int64_t>());
    }
  } else {
    node.error(
        "post-processor type \"{}\" is not supported (supported: TemplateProcessing, ByteLevel, "
        "RobertaProcessing, BertProcessing, Sequence)",
        type);
  }
  // A later processor wraps what the earlier ones produced.
  frame.prefix.insert(frame.prefix.begin(), own.prefix.begin(), own.prefix.end());
  frame.suffix.insert(frame.suffix.end(), own.suffix.begin(), own.suffix.end());
}

}  // namespace grm::hf
