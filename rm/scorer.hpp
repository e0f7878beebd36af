// Scorer: anything that turns (prompt, response) pairs into rewards, behind one interface — a reward
// model directory (one model, or an ensemble folder with ensemble.json), a served reward model over HTTP
// (`url`), or a built-in programmatic oracle. Used for evaluation, labelling, Best-of-N and PPO.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/config.hpp"
#include "policy/chat_format.hpp"
#include "rm/serve/score_item.hpp"

namespace grm {

struct ScorerConfig {
  std::string model;  // reward model directory
  std::string
      tokenizer;    // with model: a directory or tokenizer file, for model directories saved without one
  std::string url;  // http://host:port/get_reward of `grm serve`
  std::string token_file;  // bearer token for url, read from this file
  std::string oracle;      // built-in programmatic scorer: "story", or "word:WORD[:MAX]" (count of a word)
  // With `model`: run it as a `grm serve` process on a free loopback port for this scorer's lifetime
  // (started, waited for on /health, scored through HTTP, stopped), as a gold RM living beside the stage.
  bool serve = false;
  // With `model`: rewards normalized as (r - mean) / std by the statistics its training recorded over the
  // training responses (config.json "mean", "std", as OpenRLHF writes them); an error if it has none.
  bool normalize = false;
  // With `model`: read text with this chat template (policy/chat_format.hpp) instead of the one its
  // training recorded (a Hugging Face checkpoint without a record: auto). "" keeps the record.
  std::string chat_template, append_eos;
  int64_t batch_size = 32;
  std::string device = "auto";
  // With `model`: the weights' storage (rm/train_state.hpp frozen_dtype). float32 by default because the
  // rewards are measurements: bf16 weights halve the memory but move a small model's rewards by up to
  // 10% (Pearson 0.98 with fp32's, TrainRm.FrozenWeightsInBf16StayWithinRoundingOfFp32); auto = bf16 on GPUs.
  std::string dtype = "float32";
  template <class V>
  void visit(V& v) {
    v("model", model);
    v("tokenizer", tokenizer);
    v("url", url);
    v("token_file", token_file);
    v("oracle", oracle);
    v("serve", serve);
    v("normalize", normalize);
    v("chat_template", chat_template);
    v("append_eos", append_eos, Choices{"", "auto", "true", "false"});
    v("batch_size", batch_size, Range::at_least(1));
    v("device", device, Choices{"auto", "cpu", "cuda"});
    v("dtype", dtype, Choices{"auto", "float32", "bfloat16"});
  }
};

// The command line that starts a reward server for model_dir on a loopback port, scoring at most
// max_batch items per call: what `serve: true` runs for the scorer's lifetime. The CLI registers it
// (served_rm_command in pipeline/cli/commands.hpp), because only the CLI knows how its `serve` subcommand and
// flags are spelled; rm/ never names them.
using ServedRmCommand =
    std::function<std::vector<std::string>(const std::string& model_dir, int port, int64_t max_batch)>;
void set_served_rm_command(ServedRmCommand command);

// The mean and std of a reward model's rewards over its training responses.
struct RewardStatistics {
  double mean = 0, std = 1;
};

class Scorer {
 public:
  virtual ~Scorer() = default;
  virtual std::vector<double> score(const std::vector<ScoreItem>& items) = 0;
  // The raw rewards' training statistics, when the scorer is one reward model that recorded them.
  virtual std::optional<RewardStatistics> reward_statistics() const { return std::nullopt; }
};

// Exactly one of model / url / oracle must be set; config_dir resolves relative model names.
std::unique_ptr<Scorer> make_scorer(const ScorerConfig& config, const std::string& config_dir = "");
// A reward model (or ensemble) directory scored in-process.
// `tokenizer`: a directory or tokenizer file to use instead of the model directory's own (transformers
// saves *ForSequenceClassification checkpoints without one); empty: the model directory's.
// normalize: as ScorerConfig::normalize (an ensemble normalizes each member by its own before combining).
// format: as ScorerConfig::chat_template / append_eos (empty: the model's record).
// The second form takes every model setting of a ScorerConfig (its model, url and serve are not read).
std::unique_ptr<Scorer> make_model_scorer(const std::string& directory, int64_t batch_size = 32,
                                          const std::string& device = "auto",
                                          const std::string& tokenizer = "", bool normalize = false,
                                          const ChatFormatConfig& format = {"", ""});
std::unique_ptr<Scorer> make_model_scorer(const std::string& directory, const ScorerConfig& settings);

// The mean and (population) std of `model_dir`'s rewards over (prompt, response) `texts`, recorded into
// its config.json as "mean" and "std" (rewritten atomically). Returns them.
RewardStatistics record_reward_statistics(const std::string& model_dir,
                                          const std::vector<std::pair<std::string, std::string>>& texts);
// Mean and population std from a count, a sum and a sum of squares (which ranks can add); a std of 0
// becomes 1, as a constant reward model has no scale.
RewardStatistics reward_statistics_from_sums(double n, double sum, double squares);
// Writes them into model_dir/config.json as "mean" and "std" (rewritten atomically).
void write_reward_statistics(const std::string& model_dir, const RewardStatistics& stats);

// Ensemble combination of member rewards r_1..r_K per item (rm/train_rm.hpp EnsembleConfig): mean; min
// (WCO); mean_minus_std: mean - lambda * std; uwo: mean - lambda * variance (population moments);
// softmin: -beta * log mean exp(-r_k / beta), computed shifted by the min so no exponent overflows.
double combine_ensemble(const std::vector<double>& member_rewards, const std::string& combine, double lambda,
                        double beta = 1.0);

}  // namespace grm
