#include "policy/tokenizer/regex.hpp"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "core/error.hpp"
#include "policy/tokenizer/unicode.hpp"

namespace grm {
namespace {

struct MatchDataDeleter {
  void operator()(pcre2_match_data* data) const { pcre2_match_data_free(data); }
};
using MatchData = std::unique_ptr<pcre2_match_data, MatchDataDeleter>;

// A larger JIT stack for the rare pattern and input (long runs under nested quantifiers) that overflows
// PCRE2's 32 KiB default; allocated only then.
struct JitStack {
  pcre2_match_context* context = pcre2_match_context_create(nullptr);
  pcre2_jit_stack* stack = pcre2_jit_stack_create(32 * 1024, 64 * 1024 * 1024, nullptr);
  JitStack() { pcre2_jit_stack_assign(context, nullptr, stack); }
  ~JitStack() {
    pcre2_jit_stack_free(stack);
    pcre2_match_context_free(context);
  }
};

// One match at or after `start`; false when there is none. The subject was validated as UTF-8 once, so
// PCRE2 skips its per-call check (which would make repeated searches quadratic).
bool search(const pcre2_code* code, std::string_view text, size_t start, uint32_t options,
            pcre2_match_data* data, TextMatch& match) {
  auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  int rc = pcre2_match(code, subject, text.size(), start, options | PCRE2_NO_UTF_CHECK, data, nullptr);
  if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
    thread_local JitStack big;
    rc = pcre2_match(code, subject, text.size(), start, options | PCRE2_NO_UTF_CHECK, data, big.context);
  }
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  if (rc < 0) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(rc, message, sizeof message);
    fail("regex match failed on a {}-byte text: {}", text.size(), reinterpret_cast<const char*>(message));
  }
  const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data);
  match = {ovector[0], ovector[1]};
  return true;
}

}  // namespace

TextPattern TextPattern::literal(std::string text) {
  TextPattern pattern;
  pattern.literal_ = std::move(text);
  return pattern;
}

TextPattern TextPattern::regex(const std::string& source, const std::string& where) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(source.data()), source.size(),
                                   PCRE2_UTF | PCRE2_UCP, &error, &offset, nullptr);
  if (!code) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof message);
    fail("{}: regex /{}/ does not compile at offset {}: {}; fix the pattern", where, source, offset,
         reinterpret_cast<const char*>(message));
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter where JIT is unavailable
  TextPattern pattern;
  pattern.code_ = std::shared_ptr<pcre2_real_code_8>(code, pcre2_code_free);
  return pattern;
}

void TextPattern::find_all(std::string_view text, std::vector<TextMatch>& matches) const {
  matches.clear();
  if (!code_) {
    if (literal_.empty()) return;
    for (size_t pos = text.find(literal_); pos != std::string_view::npos; pos = text.find(literal_, pos)) {
      matches.push_back({pos, pos + literal_.size()});
      pos += literal_.size();
    }
    return;
  }
  MatchData data(pcre2_match_data_create_from_pattern(code_.get(), nullptr));
  size_t start = 0;
  TextMatch match;
  while (start <= text.size() && search(code_.get(), text, start, 0, data.get(), match)) {
    matches.push_back(match);
    if (match.end > match.begin) {
      start = match.end;
    } else {  // an empty match: resume one character later, as Oniguruma's iterator does
      if (match.end >= text.size()) break;
      start = match.end + unicode::sequence_length(static_cast<unsigned char>(text[match.end]));
    }
  }
}

std::string TextPattern::replace_all(std::string_view text, std::string_view replacement) const {
  std::vector<TextMatch> matches;
  find_all(text, matches);
  if (matches.empty()) return std::string(text);
  std::string out;
  out.reserve(text.size());
  size_t previous = 0;
  for (const auto& m : matches) {
    out.append(text.substr(previous, m.begin - previous));
    out.append(replacement);
    previous = m.end;
  }
  out.append(text.substr(previous));
  return out;
}

bool TextPattern::matches_at(std::string_view text, size_t pos) const {
  if (!code_) return text.substr(pos, literal_.size()) == literal_;
  MatchData data(pcre2_match_data_create_from_pattern(code_.get(), nullptr));
  TextMatch match;
  return search(code_.get(), text, pos, PCRE2_ANCHORED, data.get(), match);
}

}  // namespace grm
