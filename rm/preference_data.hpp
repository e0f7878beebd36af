// Preference data as users have it: JSONL files (optionally gzip-compressed) in one of several layouts,
// mapped onto (prompt, chosen, rejected[, margin]) pairs by a field map in config:
//   pairs       {prompt, chosen, rejected} strings (prompt optional), optional margin field
//   messages    chosen / rejected are chat lists [{role, content}]; the prompt is every message before the
//               last one, the response is the last (assistant) message
//   transcript  chosen / rejected are "\n\nHuman: ... \n\nAssistant: ..." strings, split at the last
//               Assistant turn (HH-RLHF)
//   rated       conv_A / conv_B (message lists or strings) with conv_A_rating / conv_B_rating: the higher
//               rating wins, equal ratings are ties, margin = rating gap (Unified-Feedback)
//   winner      prompt, response_a, response_b and a winner label (a / b / model_a / model_b / tie, or
//               numbers and words of the data's own through winner_values)
// Bad records are errors naming file:line and field, or with on_bad_record: skip, counted and reported.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/config.hpp"
#include "policy/chat_format.hpp"

namespace grm {

struct DataConfig {
  std::string path;
  std::string format = "auto";
  std::string prompt_field = "prompt";
  std::string chosen_field = "chosen";
  std::string rejected_field = "rejected";
  std::string margin_field;                                      // pairs: optional per-record margin
  std::vector<std::string> group_fields = {"subset", "source"};  // kept for per-group evaluation
  std::string a_field = "conv_A", b_field = "conv_B";
  std::string a_rating_field = "conv_A_rating", b_rating_field = "conv_B_rating";
  std::string response_a_field = "response_a", response_b_field = "response_b", winner_field = "winner";
  // winner: what the winner field's values mean (a, b or tie), for data that labels with numbers or words
  // of its own, e.g. {0: a, 1: b, 2: tie}; consulted before the built-in a / b / model_a / model_b / tie.
  std::map<std::string, std::string> winner_values;
  std::string ties = "drop";            // drop | keep (kept ties train towards equal rewards)
  std::string on_bad_record = "error";  // error | skip
  int64_t limit = 0;                    // read at most this many pairs; 0 = all
  // How the model being trained reads each pair (policy/chat_format.hpp): keys chat_template, append_eos.
  ChatFormatConfig chat;

  template <class V>
  void visit(V& v) {
    v("path", path);
    v("format", format, Choices{"auto", "pairs", "messages", "transcript", "rated", "winner"});
    v("prompt_field", prompt_field);
    v("chosen_field", chosen_field);
    v("rejected_field", rejected_field);
    v("margin_field", margin_field);
    v("group_fields", group_fields);
    v("a_field", a_field);
    v("b_field", b_field);
    v("a_rating_field", a_rating_field);
    v("b_rating_field", b_rating_field);
    v("response_a_field", response_a_field);
    v("response_b_field", response_b_field);
    v("winner_field", winner_field);
    v("winner_values", winner_values, Choices{"a", "b", "tie"});
    v("ties", ties, Choices{"drop", "keep"});
    v("on_bad_record", on_bad_record, Choices{"error", "skip"});
    v("limit", limit, Range::at_least(0));
    chat.visit_keys(v);
  }
};

struct PreferencePair {
  std::string prompt;
  std::string chosen;  // response text only
  std::string rejected;
  double margin = 0;
  bool tie = false;
  std::map<std::string, std::string> groups;  // group field -> value
  std::string origin;                         // "file:line"
};

struct DataReport {
  int64_t records = 0, pairs = 0, skipped = 0, ties_dropped = 0, ties_kept = 0;
  std::vector<std::string> skipped_examples;  // first few reasons
};

// The format `auto` resolves to for this record (or an error naming the line).
std::vector<PreferencePair> read_preferences(const DataConfig& config, DataReport* report = nullptr);
// The prompts of a prompt file (BoN, PPO): one {"id", "prompt"} JSON record per line, blank lines skipped;
// anything else malformed, or a file without prompts, is an error naming the file and line.
std::vector<std::string> read_prompt_file(const std::string& path);

}  // namespace grm
