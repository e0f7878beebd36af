#include "rm/scorer.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>

#include "cluster/atomic_file.hpp"
#include "cluster/error.hpp"
#include "policy/model_path.hpp"
#include "policy/tokenizer.hpp"
#include "rm/reward_data.hpp"
#include "rm/reward_model.hpp"
#include "rm/story_oracle.hpp"

namespace grm {
namespace {

namespace fs = std::filesystem;

torch::Device scorer_device(const std::string& name) {
  if (name == "cuda" || (name == "auto" && torch::cuda::is_available())) return torch::kCUDA;
  return torch::kCPU;
}

class ModelScorer : public Scorer {
 public:
  ModelScorer(const std::string& directory, int64_t batch_size, const std::string& device)
      : batch_size_(std::max<int64_t>(1, batch_size)), device_(scorer_device(device)) {
    model_ = load_reward_model(directory);
    model_->to(device_);
    tokenizer_ = load_tokenizer(directory);
    max_length_ = model_->metadata.value("max_length", int64_t(512));
    max_length_ = std::min<int64_t>(max_length_, model_->backbone()->config().n_positions);
  }
  std::vector<double> score(const std::vector<ScoreItem>& items) override {
    torch::NoGradGuard no_grad;
    std::vector<double> out;
    out.reserve(items.size());
    for (size_t begin = 0; begin < items.size(); begin += size_t(batch_size_)) {
      size_t end = std::min(items.size(), begin + size_t(batch_size_));
      std::vector<EncodedSequence> encoded;
      for (size_t i = begin; i < end; ++i)
        encoded.push_back(encode_prompt_response(*tokenizer_, items[i].prompt, items[i].response, max_length_));
      std::vector<const EncodedSequence*> pointers;
      for (const auto& e : encoded) pointers.push_back(&e);
      auto batch = collate(pointers, tokenizer_->pad_id.value_or(0));
      auto rewards = model_->forward(batch.ids.to(device_), batch.mask.to(device_)).rewards.to(torch::kCPU);
      auto a = rewards.accessor<float, 1>();
      for (int64_t i = 0; i < rewards.size(0); ++i) out.push_back(double(a[i]));
    }
    return out;
  }

 private:
  int64_t batch_size_;
  torch::Device device_;
  RewardModel model_{nullptr};
  std::unique_ptr<Tokenizer> tokenizer_;
  int64_t max_length_ = 512;
};

class EnsembleScorer : public Scorer {
 public:
  EnsembleScorer(const std::string& directory, int64_t batch_size, const std::string& device) {
    auto info = nlohmann::json::parse(read_file((fs::path(directory) / "ensemble.json").string()));
    int64_t members = info.value("members", int64_t(0));
    combine_ = info.value("combine", std::string("mean"));
    lambda_ = info.value("lambda", 1.0);
    if (members < 1) fail("{}/ensemble.json: 'members' must be at least 1", directory);
    for (int64_t k = 0; k < members; ++k)
      members_.push_back(std::make_unique<ModelScorer>(
          (fs::path(directory) / fmt::format("member_{}", k)).string(), batch_size, device));
  }
  std::vector<double> score(const std::vector<ScoreItem>& items) override {
    std::vector<std::vector<double>> per_member;
    for (auto& m : members_) per_member.push_back(m->score(items));
    std::vector<double> out(items.size());
    for (size_t i = 0; i < items.size(); ++i) {
      std::vector<double> values;
      for (const auto& m : per_member) values.push_back(m[i]);
      out[i] = combine_ensemble(values, combine_, lambda_);
    }
    return out;
  }

 private:
  std::vector<std::unique_ptr<ModelScorer>> members_;
  std::string combine_;
  double lambda_ = 1;
};

class HttpScorer : public Scorer {
 public:
  HttpScorer(const std::string& url, const std::string& token) : client_(url, token) {}
  std::vector<double> score(const std::vector<ScoreItem>& items) override { return client_.score(items); }

 private:
  RewardClient client_;
};

class OracleScorer : public Scorer {
 public:
  explicit OracleScorer(const std::string& name) {
    if (name != "story") fail("oracle '{}' is not known (built-in: story)", name);
  }
  std::vector<double> score(const std::vector<ScoreItem>& items) override {
    std::vector<double> out;
    for (const auto& item : items) out.push_back(story_oracle_score(item.prompt, item.response));
    return out;
  }
};

}  // namespace

double combine_ensemble(const std::vector<double>& values, const std::string& combine, double lambda) {
  if (values.empty()) fail("ensemble: no member rewards to combine");
  double mean = std::accumulate(values.begin(), values.end(), 0.0) / double(values.size());
  if (combine == "mean") return mean;
  if (combine == "min") return *std::min_element(values.begin(), values.end());
  if (combine == "mean_minus_std") {
    double var = 0;
    for (double v : values) var += (v - mean) * (v - mean);
    return mean - lambda * std::sqrt(var / double(values.size()));
  }
  fail("ensemble combine '{}' is not known (mean, min, mean_minus_std)", combine);
}

std::unique_ptr<Scorer> make_model_scorer(const std::string& directory, int64_t batch_size, const std::string& device) {
  if (fs::exists(fs::path(directory) / "ensemble.json"))
    return std::make_unique<EnsembleScorer>(directory, batch_size, device);
  return std::make_unique<ModelScorer>(directory, batch_size, device);
}

std::unique_ptr<Scorer> make_scorer(const ScorerConfig& c, const std::string& config_dir) {
  int set = int(!c.model.empty()) + int(!c.url.empty()) + int(!c.oracle.empty());
  if (set != 1) fail("a scorer needs exactly one of model, url or oracle ({} given)", set);
  if (!c.oracle.empty()) return std::make_unique<OracleScorer>(c.oracle);
  if (!c.url.empty()) {
    std::string token;
    if (!c.token_file.empty()) {
      token = read_file(c.token_file);
      token.erase(token.find_last_not_of(" \r\n") + 1);
    }
    return std::make_unique<HttpScorer>(c.url, token);
  }
  std::string dir = fs::exists(c.model) ? c.model : resolve_model_path(c.model, config_dir);
  return make_model_scorer(dir, c.batch_size, c.device);
}

}  // namespace grm
