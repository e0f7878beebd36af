#include "rm/scorer.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <thread>

#include "cluster/launcher.hpp"
#include "core/atomic_file.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "policy/model_path.hpp"
#include "policy/tokenizer/tokenizer.hpp"
#include "rm/reward_data.hpp"
#include "rm/reward_model.hpp"
#include "rm/serve/client.hpp"
#include "rm/story_oracle.hpp"
#include "rm/train_state.hpp"

namespace grm {
namespace {

namespace fs = std::filesystem;

torch::Device scorer_device(const std::string& name) {
  if (name == "cuda" || (name == "auto" && torch::cuda::is_available())) return torch::kCUDA;
  return torch::kCPU;
}

class ModelScorer : public Scorer {
 public:
  // settings: batch_size, device, dtype, tokenizer, normalize, chat_template and append_eos of a
  // ScorerConfig (its model, url and serve are the caller's business).
  ModelScorer(const std::string& directory, const ScorerConfig& settings)
      : batch_size_(std::max<int64_t>(1, settings.batch_size)),
        device_(scorer_device(settings.device)),
        normalize_(settings.normalize) {
    const std::string& tokenizer = settings.tokenizer;
    model_ = load_reward_model(directory);
    const auto& config = model_->backbone()->config().raw;  // config.json, as the loader read it
    if (config.contains("mean") && config["mean"].is_number() && config.contains("std") &&
        config["std"].is_number() && config["std"].get<double>() > 0)
      statistics_ = RewardStatistics{config["mean"].get<double>(), config["std"].get<double>()};
    if (normalize_ && !statistics_)
      fail(
          "{}/config.json has no reward statistics ('mean' and a positive 'std'), so its rewards cannot be "
          "normalized; train it with this grm (train-rm records them) or score without normalize",
          directory);
    model_->to(device_, frozen_dtype(device_, settings.dtype));
    tokenizer_ = load_tokenizer(tokenizer.empty() ? directory : tokenizer);
    max_length_ = model_->metadata.value("max_length", int64_t(512));
    max_length_ = std::min<int64_t>(max_length_, model_->backbone()->config().n_positions);
    max_piece_bytes_ = longest_piece_bytes(*tokenizer_);
    // The model reads text as its training did (its record), unless the scorer's config says otherwise. A
    // template is looked up beside the tokenizer when it has its own (transformers saves classifiers
    // without tokenizer files, and their template with them).
    std::string template_dir = directory;
    if (!tokenizer.empty())
      template_dir = fs::is_directory(tokenizer) ? tokenizer : fs::path(tokenizer).parent_path().string();
    format_ = settings.chat_template.empty()
                  ? ChatFormat::from_metadata(model_->metadata, template_dir, *tokenizer_)
                  : ChatFormat::resolve({settings.chat_template, "auto"}, template_dir, *tokenizer_,
                                        "scorer chat_template");
    if (!settings.append_eos.empty()) format_ = format_.with_append_eos(settings.append_eos);
  }
  std::vector<double> score(const std::vector<ScoreItem>& items) override {
    torch::NoGradGuard no_grad;
    std::vector<EncodedSequence> encoded;
    encoded.reserve(items.size());
    for (const auto& item : items)
      // Bounded: an 8 MB text costs what max_length tokens cost, not seconds of tokenizing.
      encoded.push_back(
          encode_chat_text_bounded(*tokenizer_,
                                   item.formatted ? format_.as_is(item.response)
                                                  : format_.render(item.prompt, item.response, item.finished),
                                   max_length_, max_piece_bytes_));
    // Batches of similar lengths waste little on padding; results go back in the callers' order.
    std::vector<size_t> order(items.size());
    std::iota(order.begin(), order.end(), size_t(0));
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return encoded[a].ids.size() < encoded[b].ids.size(); });
    std::vector<double> out(items.size());
    for (size_t begin = 0; begin < order.size(); begin += size_t(batch_size_)) {
      size_t end = std::min(order.size(), begin + size_t(batch_size_));
      std::vector<const EncodedSequence*> pointers;
      for (size_t i = begin; i < end; ++i) pointers.push_back(&encoded[order[i]]);
      auto batch = collate(pointers, tokenizer_->pad_id.value_or(0));
      auto rewards = model_->forward(batch.ids.to(device_), batch.mask.to(device_))
                         .rewards.to(torch::kCPU)
                         .to(torch::kFloat32);  // bf16 weights give bf16 rewards
      auto a = rewards.accessor<float, 1>();
      for (size_t i = begin; i < end; ++i) out[order[i]] = double(a[int64_t(i - begin)]);
    }
    if (normalize_)
      for (double& r : out) r = (r - statistics_->mean) / statistics_->std;
    return out;
  }
  // Normalized scores have mean 0 and std 1 over the training responses: what a caller normalizing
  // again must divide by.
  std::optional<RewardStatistics> reward_statistics() const override {
    if (normalize_) return RewardStatistics{0, 1};
    return statistics_;
  }

 private:
  int64_t batch_size_;
  torch::Device device_;
  RewardModel model_{nullptr};
  std::unique_ptr<Tokenizer> tokenizer_;
  int64_t max_length_ = 512;
  size_t max_piece_bytes_ = 1;
  bool normalize_ = false;
  std::optional<RewardStatistics> statistics_;
  ChatFormat format_;
};

class EnsembleScorer : public Scorer {
 public:
  EnsembleScorer(const std::string& directory, const ScorerConfig& settings) {
    auto info = nlohmann::json::parse(read_file((fs::path(directory) / "ensemble.json").string()));
    int64_t members = info.value("members", int64_t(0));
    combine_ = info.value("combine", std::string("mean"));
    lambda_ = info.value("lambda", 1.0);
    beta_ = info.value("beta", 1.0);
    if (!(beta_ > 0)) fail("{}/ensemble.json: 'beta' must be above 0, not {}", directory, beta_);
    try {
      combine_ensemble({0.0}, combine_, lambda_, beta_);
    } catch (const std::exception& e) {
      fail("{}/ensemble.json: {}", directory, e.what());
    }
    if (members < 1) fail("{}/ensemble.json: 'members' must be at least 1", directory);
    for (int64_t k = 0; k < members; ++k)
      members_.push_back(std::make_unique<ModelScorer>(
          (fs::path(directory) / fmt::format("member_{}", k)).string(), settings));
  }
  std::vector<double> score(const std::vector<ScoreItem>& items) override {
    std::vector<std::vector<double>> per_member;
    for (auto& m : members_) per_member.push_back(m->score(items));
    std::vector<double> out(items.size());
    for (size_t i = 0; i < items.size(); ++i) {
      std::vector<double> values;
      for (const auto& m : per_member) values.push_back(m[i]);
      out[i] = combine_ensemble(values, combine_, lambda_, beta_);
    }
    return out;
  }

 private:
  std::vector<std::unique_ptr<ModelScorer>> members_;
  std::string combine_;
  double lambda_ = 1, beta_ = 1;
};

class HttpScorer : public Scorer {
 public:
  HttpScorer(const std::string& url, const std::string& token) : client_(url, token) {}
  std::vector<double> score(const std::vector<ScoreItem>& items) override { return client_.score(items); }

 private:
  RewardClient client_;
};

// Occurrences of one word in the response (ASCII case-insensitive, whole words only: "happy," counts,
// "unhappy" does not), capped so that a policy optimised against it has a bounded target: the simplest
// proxy that a policy can visibly over-optimise.
double count_word(const std::string& text, const std::string& word, int64_t cap) {
  auto is_word_char = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '\''; };
  auto lower = [](char c) { return char(std::tolower(static_cast<unsigned char>(c))); };
  int64_t count = 0;
  for (size_t i = 0; i + word.size() <= text.size() && count < cap; ++i) {
    if (i > 0 && is_word_char(text[i - 1])) continue;
    size_t k = 0;
    while (k < word.size() && lower(text[i + k]) == lower(word[k])) ++k;
    if (k == word.size() && (i + k == text.size() || !is_word_char(text[i + k]))) ++count;
  }
  return double(count);
}

// "story" (rm/story_oracle.hpp) or "word:WORD[:MAX]" (count_word, MAX 5 by default).
ServedRmCommand& registered_served_rm_command() {
  static ServedRmCommand command;
  return command;
}

// A reward model served by a child process (the registered ServedRmCommand) for as long as this scorer lives.
class ServedModelScorer : public Scorer {
 public:
  ServedModelScorer(const std::string& directory, int64_t batch_size) {
    const ServedRmCommand& command = registered_served_rm_command();
    if (!command)
      fail(
          "serve: true needs a program that can serve reward models (this one registered no serve command); "
          "score in-process instead (serve: false)");
    int port = free_loopback_port();
    log_ = (fs::temp_directory_path() / fmt::format("grm_serve_{}_{}.log", ::getpid(), port)).string();
    SpawnOptions options;
    options.log_path = log_;
    options.detach_from_mpi_job = true;
    pid_ = spawn_process(command(directory, port, std::max<int64_t>(1, batch_size)), options);
    client_ = std::make_unique<RewardClient>(fmt::format("http://127.0.0.1:{}/get_reward", port));
    for (int attempt = 0; !client_->healthy(); ++attempt) {
      if (auto status = poll_process(pid_)) {
        pid_ = 0;
        fail("the served reward model {} exited before answering ({}); its log: {}", directory,
             status->describe(), log_);
      }
      if (attempt > 1200)
        fail("the served reward model {} did not answer /health in 2 minutes; its log: {}", directory, log_);
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    log::info("scoring {} through a served copy at http://127.0.0.1:{}/get_reward", directory, port);
  }
  ~ServedModelScorer() override {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);  // the server finishes in-flight requests, then exits
    wait_process(pid_);
    std::error_code ignored;
    fs::remove(log_, ignored);
  }
  std::vector<double> score(const std::vector<ScoreItem>& items) override { return client_->score(items); }

 private:
  static int free_loopback_port() {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(address);
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
      if (fd >= 0) ::close(fd);
      fail("cannot find a free loopback port for the served reward model");
    }
    ::close(fd);
    return ntohs(address.sin_port);
  }
  pid_t pid_ = 0;
  std::string log_;
  std::unique_ptr<RewardClient> client_;
};

class OracleScorer : public Scorer {
 public:
  explicit OracleScorer(const std::string& name) {
    if (name == "story") return;
    if (name.rfind("word:", 0) == 0) {
      word_ = name.substr(5);
      if (auto colon = word_.find(':'); colon != std::string::npos) {
        std::string cap = word_.substr(colon + 1);
        word_.resize(colon);
        char* end = nullptr;
        cap_ = std::strtoll(cap.c_str(), &end, 10);
        if (cap.empty() || *end != '\0' || cap_ < 1)
          fail("oracle '{}': the cap after the word must be a positive integer, e.g. word:happy:5", name);
      }
      if (word_.empty()) fail("oracle '{}': name the word, e.g. word:happy", name);
      return;
    }
    fail("oracle '{}' is not known (built-in: story, word:WORD[:MAX])", name);
  }
  std::vector<double> score(const std::vector<ScoreItem>& items) override {
    std::vector<double> out;
    for (const auto& item : items)
      out.push_back(word_.empty() ? story_oracle_score(item.prompt, item.response)
                                  : count_word(item.response, word_, cap_));
    return out;
  }

 private:
  std::string word_;  // empty for the story oracle
  int64_t cap_ = 5;
};

}  // namespace

double combine_ensemble(const std::vector<double>& values, const std::string& combine, double lambda,
                        double beta) {
  if (values.empty()) fail("ensemble: no member rewards to combine");
  double n = double(values.size());
  double mean = std::accumulate(values.begin(), values.end(), 0.0) / n;
  double min = *std::min_element(values.begin(), values.end());
  double variance = 0;
  for (double v : values) variance += (v - mean) * (v - mean) / n;
  if (combine == "mean") return mean;
  if (combine == "min") return min;
  if (combine == "mean_minus_std") return mean - lambda * std::sqrt(variance);
  if (combine == "uwo") return mean - lambda * variance;
  if (combine == "softmin") {
    // -beta log mean exp(-r/beta) = min - beta log mean exp(-(r - min)/beta); every exponent is <= 0.
    double sum = 0;
    for (double v : values) sum += std::exp(-(v - min) / beta);
    return min - beta * std::log(sum / n);
  }
  fail("ensemble combine '{}' is not known (mean, min, mean_minus_std, uwo, softmin)", combine);
}

void set_served_rm_command(ServedRmCommand command) {
  registered_served_rm_command() = std::move(command);
}

std::unique_ptr<Scorer> make_model_scorer(const std::string& directory, int64_t batch_size,
                                          const std::string& device, const std::string& tokenizer,
                                          bool normalize, const ChatFormatConfig& format) {
  ScorerConfig settings;
  settings.batch_size = batch_size;
  settings.device = device;
  settings.tokenizer = tokenizer;
  settings.normalize = normalize;
  settings.chat_template = format.chat_template;
  settings.append_eos = format.append_eos;
  return make_model_scorer(directory, settings);
}

std::unique_ptr<Scorer> make_model_scorer(const std::string& directory, const ScorerConfig& settings) {
  if (fs::exists(fs::path(directory) / "ensemble.json"))
    return std::make_unique<EnsembleScorer>(directory, settings);
  return std::make_unique<ModelScorer>(directory, settings);
}

RewardStatistics record_reward_statistics(const std::string& model_dir,
                                          const std::vector<std::pair<std::string, std::string>>& texts) {
  if (texts.empty()) fail("{}: no responses to take reward statistics over", model_dir);
  std::vector<ScoreItem> items;
  for (const auto& [prompt, response] : texts) items.push_back({prompt, response});
  ScorerConfig settings;
  settings.batch_size = 64;
  auto rewards = ModelScorer(model_dir, settings).score(items);
  double sum = 0, squares = 0;
  for (double r : rewards) sum += r, squares += r * r;
  auto stats = reward_statistics_from_sums(double(rewards.size()), sum, squares);
  write_reward_statistics(model_dir, stats);
  return stats;
}

RewardStatistics reward_statistics_from_sums(double n, double sum, double squares) {
  if (!(n > 0)) fail("reward statistics over no responses");
  double mean = sum / n, var = std::max(0.0, squares / n - mean * mean);
  // A constant reward model has no scale to divide by: its std is recorded as 1.
  return {mean, var > 0 ? std::sqrt(var) : 1.0};
}

void write_reward_statistics(const std::string& model_dir, const RewardStatistics& stats) {
  auto path = (fs::path(model_dir) / "config.json").string();
  auto config = nlohmann::json::parse(read_file(path));
  config["mean"] = stats.mean;
  config["std"] = stats.std;
  write_file_atomic(path, config.dump(2) + "\n");
}

std::unique_ptr<Scorer> make_scorer(const ScorerConfig& c, const std::string& config_dir) {
  int set = int(!c.model.empty()) + int(!c.url.empty()) + int(!c.oracle.empty());
  if (set != 1) fail("a scorer needs exactly one of model, url or oracle ({} given)", set);
  if (c.normalize && c.model.empty())
    fail("normalize divides by a reward model's training statistics: it needs model, not url or oracle");
  if (!c.oracle.empty()) return std::make_unique<OracleScorer>(c.oracle);
  if (!c.url.empty()) {
    std::string token;
    if (!c.token_file.empty()) {
      token = read_file(c.token_file);
      token.erase(token.find_last_not_of(" \r\n") + 1);
    }
    return std::make_unique<HttpScorer>(c.url, token);
  }
  std::string dir = resolve_model_path(c.model, config_dir);
  if (c.serve) {
    if (!c.chat_template.empty() || !c.append_eos.empty())
      fail(
          "{}: a scorer with serve: true reads text as the served model recorded; chat_template and "
          "append_eos are not available",
          dir);
    if (c.normalize)
      fail("{}: a scorer with serve: true scores raw rewards; normalize is not available", dir);
    if (c.dtype != "float32")
      fail("{}: a scorer with serve: true stores the served model as it chooses; dtype is not available",
           dir);
    return std::make_unique<ServedModelScorer>(dir, c.batch_size);
  }
  ScorerConfig settings = c;
  settings.tokenizer = c.tokenizer.empty() ? "" : resolve_model_path(c.tokenizer, config_dir);
  return make_model_scorer(dir, settings);
}

}  // namespace grm
