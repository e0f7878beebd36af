// RewardBench 2 (Malik et al., 2025) scored as its official scorer scores it. Each record is one prompt
// with K responses, the first num_correct of them correct ({"id", "prompt", "chosen": [...],
// "rejected": [...], "num_correct", "subset"}); chosen and rejected may each be a string or a list).
//   every subset but Ties   best-of-K: a prompt earns 1 / (responses tied at the top score) when a correct
//                           response is among the top ones (the data has one correct), else 0; the
//                           subset's score is the mean over its prompts
//   Ties                    prompts come as "ref:N" (one correct answer) and "tied:N" (several correct
//                           ones) with the same N; score = 0.30 tied accuracy + 0.30 ref accuracy +
//                           0.20 P(correct-incorrect margin > spread of the correct) + 0.20 the same with
//                           the smaller of ref's and tied's margins + 0.01 mean tanh(that margin / spread
//                           - 1) (0 where undefined); a prompt is accurate when every correct response
//                           outscores every incorrect one
//   overall                 the plain mean over subsets
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace grm {

struct Rb2Record {
  std::string id, prompt, subset;
  std::vector<std::string> responses;  // the correct ones first
  int64_t num_correct = 1;
  std::string origin;  // "file:line"
};

// Reads a RewardBench 2 JSONL file (bad records are errors naming file:line and field); at most `limit`
// records, 0: all.
std::vector<Rb2Record> read_rewardbench2(const std::string& path, int64_t limit = 0);

// One prompt's best-of-K credit; scores: the K responses' rewards, the correct ones first.
double best_of_k_credit(const std::vector<double>& scores, int64_t num_correct);

struct TiesPromptStats {
  bool accurate = false;                // worst correct > best incorrect
  double correct_spread = 0;            // best correct - worst correct; NaN with one correct response
  double correct_incorrect_margin = 0;  // worst correct - best incorrect
};
TiesPromptStats ties_prompt_stats(const std::vector<double>& scores, int64_t num_correct);
// The Ties subset's score from its prompts, keyed by the N of "ref:N" and "tied:N".
double ties_score(const std::map<std::string, TiesPromptStats>& ref,
                  const std::map<std::string, TiesPromptStats>& tied);

struct Rb2Result {
  std::map<std::string, double> subsets;          // subset -> score
  std::map<std::string, int64_t> subset_prompts;  // subset -> prompts scored
  double score = 0;                               // mean over subsets
};
// scores[i]: record i's responses' rewards, in its order.
Rb2Result score_rewardbench2(const std::vector<Rb2Record>& records,
                             const std::vector<std::vector<double>>& scores);

}  // namespace grm
