#include "bon/best_of_n.hpp"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <thread>

#include <nlohmann/json.hpp>

#include "bon/estimator.hpp"
#include "cluster/comm.hpp"
#include "core/atomic_file.hpp"
#include "core/correlation.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "core/text_io.hpp"
#include "policy/chat_format.hpp"
#include "policy/generate.hpp"
#include "policy/model_path.hpp"
#include "policy/tokenizer/tokenizer.hpp"
#include "rm/preference_data.hpp"

namespace grm {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// One samples.jsonl line, newline included.
std::string sample_line(const BonSample& s) {
  return json({{"prompt_id", s.prompt_id},
               {"sample_id", s.sample_id},
               {"prompt", s.prompt},
               {"text", s.text},
               {"tokens", s.tokens},
               {"finished", s.finished}})
             .dump() +
         "\n";
}

std::vector<BonSample> read_samples(const std::string& path, bool tolerate_torn_tail) {
  std::vector<BonSample> samples;
  auto lines = read_lines(path);
  for (size_t i = 0; i < lines.size(); ++i) {
    try {
      auto j = json::parse(lines[i]);
      samples.push_back({j.at("prompt_id").get<int64_t>(), j.at("sample_id").get<int64_t>(),
                         j.at("prompt").get<std::string>(), j.at("text").get<std::string>(),
                         j.at("tokens").get<int64_t>(), j.value("finished", true)});
    } catch (const json::exception& e) {
      if (tolerate_torn_tail && i + 1 == lines.size()) break;  // a write cut short by a kill
      fail("{}:{}: not a sample record ({})", path, i + 1, e.what());
    }
  }
  return samples;
}

// Generates the samples of every prompt not yet complete in out_dir/samples.jsonl.
std::vector<BonSample> sample_responses(const BonConfig& c, const std::vector<std::string>& prompts,
                                        const std::string& out_dir, const std::string& config_dir) {
  std::string path = (fs::path(out_dir) / "samples.jsonl").string();
  std::vector<BonSample> kept;
  if (fs::exists(path)) {
    // Keep whole prompts only: the killed run's partial prompt is dropped from the file (the log trimming
    // train-rm and PPO use), and sampled again.
    auto existing = read_samples(path, true);
    std::map<int64_t, int64_t> per_prompt;
    for (const auto& s : existing) ++per_prompt[s.prompt_id];
    auto whole = [&](int64_t prompt_id) { return per_prompt[prompt_id] == c.n_max; };
    for (const auto& s : existing)
      if (whole(s.prompt_id)) kept.push_back(s);
    keep_jsonl_records(path, [&](const json& record) {
      auto id = record.find("prompt_id");
      return id != record.end() && id->is_number_integer() && whole(id->get<int64_t>());
    });
  }
  int64_t done = int64_t(kept.size()) / std::max<int64_t>(1, c.n_max);
  if (done >= int64_t(prompts.size())) return kept;
  std::string model_dir = resolve_model_path(c.policy, config_dir);
  auto model = load_causal_lm(model_dir);
  auto tokenizer = load_tokenizer(model_dir);
  GenerateOptions options = generate_options_for(model->config(), *tokenizer);
  ChatFormat format = ChatFormat::resolve({c.chat_template, "auto"}, model_dir, *tokenizer, "chat_template");
  options.eos_ids = end_of_turn_ids(format, *tokenizer, options.eos_ids);
  if (format.templated()) log::info("policy chat format: {}", format.description());
  options.max_new_tokens = c.max_new_tokens;
  options.sampling = c.sampling;
  options.batch_size = c.n_max;
  if (done > 0) log::info("resuming sampling at prompt {} of {}", done, prompts.size());
  auto start = std::chrono::steady_clock::now();
  int64_t tokens = 0, samples = 0;
  for (int64_t p = done; p < int64_t(prompts.size()); ++p) {
    options.seed = c.seed * 1000003ULL + uint64_t(p);  // per prompt: independent of batching and resumes
    ChatText rendered = format.render_prompt(prompts[size_t(p)]);
    std::vector<std::vector<int64_t>> rows(size_t(c.n_max),
                                           tokenizer->encode(rendered.prompt, rendered.add_special_tokens));
    auto out = generate(model, rows, options);
    std::string text;
    for (int64_t i = 0; i < c.n_max; ++i) {
      // The sample keeps the interchange prompt: each scorer renders it with its own template.
      BonSample s{p,
                  i,
                  prompts[size_t(p)],
                  format.interchange_response(
                      decode_continuation(*tokenizer, rows[0], out.tokens[size_t(i)], options.eos_ids)),
                  int64_t(out.tokens[size_t(i)].size()),
                  bool(out.stopped_at_eos[size_t(i)])};
      text += sample_line(s);
      kept.push_back(std::move(s));
    }
    append_line(path, text.substr(0, text.size() - 1));
    tokens += out.generated_tokens, samples += c.n_max;
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    log::info("sampled prompt {}/{}: {:.1f} samples/s, {:.0f} tokens/s", p + 1, prompts.size(),
              double(samples) / seconds, double(tokens) / seconds);
  }
  return kept;
}

// Scores of all samples by one scorer, cached in scores/<name>.json.
std::vector<double> scores_for(const std::string& name, const ScorerConfig& scorer_config,
                               const std::vector<BonSample>& samples, const std::string& out_dir,
                               const std::string& config_dir) {
  auto path = fs::path(out_dir) / "scores" / (name + ".json");
  if (fs::exists(path)) {
    auto cached = json::parse(read_file(path.string()));
    if (cached.is_array() && cached.size() == samples.size()) return cached.get<std::vector<double>>();
  }
  auto start = std::chrono::steady_clock::now();
  auto scorer = make_scorer(scorer_config, config_dir);
  std::vector<ScoreItem> items;
  for (const auto& s : samples) items.push_back({s.prompt, s.text, s.finished, false});
  auto scores = scorer->score(items);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  log::info("scored {} samples with {}: {:.0f} samples/s", samples.size(), name,
            double(samples.size()) / seconds);
  write_file_atomic(path.string(), json(scores).dump());
  return scores;
}

std::vector<std::vector<double>> by_prompt(const std::vector<double>& flat, int64_t n_prompts, int64_t n) {
  std::vector<std::vector<double>> out(static_cast<size_t>(n_prompts));
  for (int64_t p = 0; p < n_prompts; ++p)
    out[size_t(p)].assign(flat.begin() + p * n, flat.begin() + (p + 1) * n);
  return out;
}

std::string proxy_name(const std::string& dir) {
  fs::path path = fs::path(dir).lexically_normal();
  if (path.filename().empty()) path = path.parent_path();
  if (path.filename() == "model") path = path.parent_path();
  return path.filename().string();
}

}  // namespace

std::vector<std::string> read_prompts(const std::string& path, const std::vector<std::string>& inline_list,
                                      int64_t limit) {
  std::vector<std::string> prompts = inline_list;
  if (!path.empty()) {
    auto from_file = read_prompt_file(path);
    prompts.insert(prompts.end(), from_file.begin(), from_file.end());
  }
  if (limit > 0 && int64_t(prompts.size()) > limit) prompts.resize(size_t(limit));
  if (prompts.empty()) fail("no prompts: set prompt_file (a JSONL file) or prompt_list");
  return prompts;
}

std::vector<BonPoint> best_of_n_curve(const std::vector<std::vector<double>>& proxy,
                                      const std::vector<std::vector<double>>& gold, int64_t bootstrap,
                                      uint64_t seed) {
  if (proxy.empty() || proxy.size() != gold.size()) fail("best-of-n curve: proxy and gold prompts differ");
  int64_t n_max = int64_t(proxy[0].size());
  auto sd_of = [](const std::vector<std::vector<double>>& scores) {
    double sum = 0, squares = 0, count = 0;
    for (const auto& prompt : scores)
      for (double s : prompt) sum += s, squares += s * s, ++count;
    double mean = sum / count;
    return std::sqrt(std::max(0.0, squares / count - mean * mean));
  };
  double proxy_sd = sd_of(proxy), gold_sd = sd_of(gold);
  std::vector<BonPoint> curve;
  for (int64_t n : best_of_n_grid(n_max)) {
    std::vector<double> proxy_values, gold_values;
    for (size_t p = 0; p < proxy.size(); ++p) {
      proxy_values.push_back(best_of_n_expectation(proxy[p], proxy[p], n));
      gold_values.push_back(best_of_n_expectation(proxy[p], gold[p], n));
    }
    auto pi = bootstrap_mean(proxy_values, int(bootstrap), 0.05, seed);
    auto gi = bootstrap_mean(gold_values, int(bootstrap), 0.05, seed + 1);
    BonPoint point{n, best_of_n_kl(n), pi.mean, gi.mean,      pi.low,     pi.high, gi.low, gi.high, 0,
                   0, proxy_sd,        gold_sd, proxy_values, gold_values};
    curve.push_back(std::move(point));
  }
  for (auto& point : curve) {
    point.proxy_norm = point.proxy - curve.front().proxy;
    point.gold_norm = point.gold - curve.front().gold;
  }
  return curve;
}

void run_best_of_n(const BonConfig& c, const std::string& out_dir, const std::string& config_dir) {
  if (c.n_max < 1) fail("bon.n_max must be at least 1, got {}", c.n_max);
  set_compute_threads(int(c.threads > 0 ? c.threads : default_thread_count(1)));
  fs::create_directories(out_dir);
  std::vector<BonSample> samples;
  if (!c.samples_from.empty()) {
    samples = read_samples(c.samples_from, false);
  } else {
    auto prompts = read_prompts(c.prompt_file, c.prompt_list, c.n_prompts);
    samples = sample_responses(c, prompts, out_dir, config_dir);
  }
  if (samples.empty()) fail("best-of-n: no samples");
  int64_t n = 0;
  while (n < int64_t(samples.size()) && samples[size_t(n)].prompt_id == samples[0].prompt_id) ++n;
  if (int64_t(samples.size()) % n != 0) fail("best-of-n: prompts have different sample counts");
  int64_t n_prompts = int64_t(samples.size()) / n;

  std::map<std::string, ScorerConfig> proxies = c.proxies;
  for (const auto& dir : c.proxy_models) {
    ScorerConfig s;
    s.model = dir;
    proxies[proxy_name(dir)] = s;
  }
  bool has_gold = !c.gold.model.empty() || !c.gold.url.empty() || !c.gold.oracle.empty();
  if (proxies.empty() || !has_gold) {
    log::info("sampled {} responses for {} prompts; no proxies or gold given, so no curves", samples.size(),
              n_prompts);
    return;
  }
  auto gold_flat = scores_for("gold", c.gold, samples, out_dir, config_dir);
  auto gold = by_prompt(gold_flat, n_prompts, n);
  BonCurves result{n, n_prompts, {}, {}, {}, NAN};
  std::vector<double> lengths;
  for (const auto& sample : samples) lengths.push_back(double(sample.tokens));
  // JSON has no NaN: an undefined correlation is left out of the maps.
  auto keep = [](std::map<std::string, double>& into, const std::string& key, double value) {
    if (std::isfinite(value)) into[key] = value;
  };
  result.gold_length_correlation = pearson(gold_flat, lengths);
  std::string csv =
      "proxy,n,kl,proxy_mean,proxy_lo,proxy_hi,gold_mean,gold_lo,gold_hi,proxy_norm,gold_norm\n";
  for (const auto& [name, scorer] : proxies) {
    auto proxy_flat = scores_for("proxy_" + name, scorer, samples, out_dir, config_dir);
    auto proxy = by_prompt(proxy_flat, n_prompts, n);
    keep(result.length_correlation, name, pearson(proxy_flat, lengths));
    keep(result.proxy_gold_spearman, name, spearman(proxy_flat, gold_flat));
    auto curve = best_of_n_curve(proxy, gold, c.bootstrap, c.seed);
    for (const auto& p : curve) {
      csv += fmt::format("{},{},{:.6f},{:.6f},{:.6f},{:.6f},{:.6f},{:.6f},{:.6f},{:.6f},{:.6f}\n", name, p.n,
                         p.kl, p.proxy, p.proxy_lo, p.proxy_hi, p.gold, p.gold_lo, p.gold_hi, p.proxy_norm,
                         p.gold_norm);
    }
    log::info("{}: best-of-{} proxy {:+.3f}, gold {:+.3f} (from n=1, KL {:.2f} nats)", name, curve.back().n,
              curve.back().proxy_norm, curve.back().gold_norm, curve.back().kl);
    result.curves[name] = std::move(curve);
  }
  write_file_atomic((fs::path(out_dir) / "bon_curves.csv").string(), csv);
  write_file_atomic((fs::path(out_dir) / "bon_curves.json").string(), json(result).dump(2));
}

void to_json(json& out, const BonPoint& p) {
  out = {{"n", p.n},
         {"kl", p.kl},
         {"proxy", p.proxy},
         {"gold", p.gold},
         {"proxy_norm", p.proxy_norm},
         {"gold_norm", p.gold_norm},
         {"proxy_lo", p.proxy_lo},
         {"proxy_hi", p.proxy_hi},
         {"gold_lo", p.gold_lo},
         {"gold_hi", p.gold_hi},
         {"proxy_sd", p.proxy_sd},
         {"gold_sd", p.gold_sd},
         {"proxy_per_prompt", p.proxy_per_prompt},
         {"gold_per_prompt", p.gold_per_prompt}};
}

void from_json(const json& in, BonPoint& p) {
  p.n = in.at("n").get<int64_t>();
  p.kl = number_or_nan(in, "kl");
  p.proxy = number_or_nan(in, "proxy");
  p.gold = number_or_nan(in, "gold");
  p.proxy_norm = number_or_nan(in, "proxy_norm");
  p.gold_norm = number_or_nan(in, "gold_norm");
  p.proxy_lo = number_or_nan(in, "proxy_lo");
  p.proxy_hi = number_or_nan(in, "proxy_hi");
  p.gold_lo = number_or_nan(in, "gold_lo");
  p.gold_hi = number_or_nan(in, "gold_hi");
  p.proxy_sd = number_or_nan(in, "proxy_sd");
  p.gold_sd = number_or_nan(in, "gold_sd");
  // Older runs have no per-prompt values: their intervals fall back to the per-point ones.
  p.proxy_per_prompt = in.value("proxy_per_prompt", std::vector<double>{});
  p.gold_per_prompt = in.value("gold_per_prompt", std::vector<double>{});
}

void to_json(json& out, const BonCurves& curves) {
  out = {
      {"n_max", curves.n_max},
      {"n_prompts", curves.n_prompts},
      {"curves", curves.curves},
      {"length_correlation", curves.length_correlation},
      {"proxy_gold_spearman", curves.proxy_gold_spearman},
      {"gold_length_correlation",
       std::isfinite(curves.gold_length_correlation) ? json(curves.gold_length_correlation) : json(nullptr)}};
}

void from_json(const json& in, BonCurves& curves) {
  curves.n_max = in.value("n_max", int64_t(0));
  curves.n_prompts = in.value("n_prompts", int64_t(0));
  curves.curves = in.value("curves", decltype(curves.curves){});
  curves.length_correlation = in.value("length_correlation", decltype(curves.length_correlation){});
  curves.proxy_gold_spearman = in.value("proxy_gold_spearman", decltype(curves.proxy_gold_spearman){});
  curves.gold_length_correlation = number_or_nan(in, "gold_length_correlation");
}

}  // namespace grm
