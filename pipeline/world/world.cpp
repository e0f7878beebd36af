#include "pipeline/world/world.hpp"

#include <cmath>
#include <filesystem>
#include <random>
#include <thread>

#include <nlohmann/json.hpp>

#include "cluster/comm.hpp"
#include "core/atomic_file.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "core/text_io.hpp"
#include "policy/generate.hpp"
#include "policy/model_path.hpp"
#include "policy/tokenizer/tokenizer.hpp"
#include "rm/preference_data.hpp"
#include "rm/scorer.hpp"
#include "rm/story_oracle.hpp"

namespace grm {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const std::vector<std::string> kNames = {"Lily", "Tom",  "Ben",  "Sue", "Max", "Mia",  "Sam", "Anna",
                                         "Tim",  "Lucy", "Jack", "Zoe", "Leo", "Ella", "Bob", "Kitty"};
const std::vector<std::string> kAnimals = {"cat", "dog", "bird", "bunny", "bear", "fish", "frog", "duck"};
const std::vector<std::string> kAdjectives = {"little", "happy", "big",  "small",
                                              "shy",    "brave", "kind", "silly"};
const std::vector<std::string> kThings = {"ball", "kite", "toy car", "red hat",
                                          "book", "box",  "balloon", "cake"};
const std::vector<std::string> kPlaces = {"park",   "beach", "forest", "store",
                                          "garden", "lake",  "zoo",    "farm"};
const std::vector<std::string> kQuotes = {"Look at that", "Can we play",    "I want to go",
                                          "Where is my",  "Let's find the", "Come and see the"};

template <class T>
const T& pick(const std::vector<T>& options, std::mt19937_64& rng) {
  return options[rng() % options.size()];
}

void write_jsonl(const fs::path& path, const std::vector<json>& records) {
  std::string text;
  for (const auto& r : records) text += r.dump() + "\n";
  write_file_atomic(path.string(), text);
}

double sigmoid(double x) {
  return 1.0 / (1.0 + std::exp(-x));
}

}  // namespace

std::vector<std::string> story_prompts(const std::string& family, int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed * 7919ULL + std::hash<std::string>{}(family));
  std::vector<std::string> prompts;
  for (int64_t i = 0; i < n; ++i) {
    const auto& name = pick(kNames, rng);
    // Each opening ends on a hook ("Lily loved to"), so the policy continues the story instead of ending it.
    if (family == "once") {
      if (rng() % 2 == 0)
        prompts.push_back("Once upon a time, there was a " + pick(kAdjectives, rng) + " " +
                          pick(kAnimals, rng) + " named " + name + ". " + name + " loved to");
      else
        prompts.push_back("Once upon a time, " + name + " had a " + pick(kThings, rng) + ". One day, " +
                          name);
    } else if (family == "day") {
      prompts.push_back("One day, " + name + " went to the " + pick(kPlaces, rng) + " with a " +
                        pick(kAnimals, rng) + ". They saw");
    } else if (family == "dialogue") {
      prompts.push_back("\"" + pick(kQuotes, rng) + " " + pick(kThings, rng) + "?\" said " + name + ". " +
                        name + "'s mom said");
    } else {
      fail("world: prompt family '{}' is not known (once, day, dialogue)", family);
    }
  }
  return prompts;
}

void build_world(const WorldStage& stage, const std::string& out_dir, const std::string& config_dir) {
  const auto& w = stage.world;
  torch::set_num_threads(int(w.threads > 0 ? w.threads : default_thread_count(1)));
  fs::create_directories(out_dir);
  fs::path out(out_dir);
  // Prompts: the train and test splits come from one draw of the in-distribution family, disjoint.
  auto in_distribution = story_prompts("once", w.n_train_prompts + w.n_test_prompts, w.seed);
  std::vector<std::string> train(in_distribution.begin(), in_distribution.begin() + w.n_train_prompts);
  std::vector<std::string> test(in_distribution.begin() + w.n_train_prompts, in_distribution.end());
  std::map<std::string, std::vector<std::string>> ood;
  for (const auto& family : w.ood_families) ood[family] = story_prompts(family, w.n_ood_prompts, w.seed + 1);
  auto prompt_records = [](const std::vector<std::string>& prompts) {
    std::vector<json> records;
    for (size_t i = 0; i < prompts.size(); ++i) records.push_back({{"id", i}, {"prompt", prompts[i]}});
    return records;
  };
  write_jsonl(out / "prompts_train.jsonl", prompt_records(train));
  write_jsonl(out / "prompts_test.jsonl", prompt_records(test));
  for (const auto& [family, prompts] : ood)
    write_jsonl(out / ("prompts_ood_" + family + ".jsonl"), prompt_records(prompts));

  // Every pair needs two continuations of one prompt: list the prompts of all pairs, then sample once.
  struct PairSlot {
    std::string set, prompt;
  };
  std::vector<PairSlot> slots;
  auto add_slots = [&](const std::string& set, const std::vector<std::string>& prompts, int64_t n) {
    for (int64_t i = 0; i < n; ++i) slots.push_back({set, prompts[size_t(i) % prompts.size()]});
  };
  add_slots("gold", train, w.n_gold_pairs);
  add_slots("pool", train, w.n_pool_pairs);
  add_slots("eval_id", test, w.n_eval_pairs);
  for (const auto& [family, prompts] : ood) add_slots("eval_ood_" + family, prompts, w.n_eval_pairs);

  std::string model_dir = resolve_model_path(stage.policy, config_dir);
  auto model = load_causal_lm(model_dir);
  auto tokenizer = load_tokenizer(model_dir);
  std::vector<std::vector<int64_t>> rows;
  for (const auto& slot : slots) {
    auto ids = tokenizer->encode(slot.prompt);
    rows.push_back(ids);
    rows.push_back(ids);
  }
  GenerateOptions options;
  options.max_new_tokens = w.max_new_tokens;
  options.sampling.temperature = w.temperature;
  options.eos_ids = model->config().eos_ids;
  options.pad_id = tokenizer->pad_id.value_or(0);
  options.seed = w.seed;
  options.batch_size = 64;
  log::info("world: sampling {} continuations for {} pairs", rows.size(), slots.size());
  auto generation = generate(model, rows, options, [](int64_t done, int64_t total) {
    if (done % 1024 == 0 || done == total) log::info("world: sampled {}/{}", done, total);
  });

  std::mt19937_64 rng(w.seed + 17);
  std::uniform_real_distribution<double> uniform(0, 1);
  std::map<std::string, std::vector<json>> sets;
  for (size_t i = 0; i < slots.size(); ++i) {
    const auto& prompt_ids = rows[2 * i];
    std::string a = decode_continuation(*tokenizer, prompt_ids, generation.tokens[2 * i], options.eos_ids);
    std::string b =
        decode_continuation(*tokenizer, prompt_ids, generation.tokens[2 * i + 1], options.eos_ids);
    const auto& slot = slots[i];
    if (slot.set == "gold") {
      double sa = story_oracle_score(slot.prompt, a), sb = story_oracle_score(slot.prompt, b);
      bool a_wins = uniform(rng) < sigmoid(sa - sb);  // Bradley-Terry sampling of the oracle's preference
      sets[slot.set].push_back({{"prompt", slot.prompt},
                                {"chosen", a_wins ? a : b},
                                {"rejected", a_wins ? b : a},
                                {"oracle_margin", std::abs(sa - sb)}});
    } else {
      sets[slot.set].push_back({{"prompt", slot.prompt}, {"response_a", a}, {"response_b", b}});
    }
  }
  write_jsonl(out / "gold_pairs.jsonl", sets["gold"]);
  write_jsonl(out / "pool.jsonl", sets["pool"]);
  write_jsonl(out / "eval_id_pool.jsonl", sets["eval_id"]);
  for (const auto& family : w.ood_families)
    write_jsonl(out / ("eval_ood_" + family + "_pool.jsonl"), sets["eval_ood_" + family]);
  log::info("world: {} gold pairs, {} pool pairs, {} eval pairs per set", sets["gold"].size(),
            sets["pool"].size(), w.n_eval_pairs);
}

void label_world(const LabelStage& c, const std::string& out_dir) {
  torch::set_num_threads(int(c.threads > 0 ? c.threads : default_thread_count(1)));
  fs::create_directories(out_dir);
  auto gold = make_model_scorer(c.gold_model);
  std::mt19937_64 rng(c.seed + 23);
  std::uniform_real_distribution<double> uniform(0, 1);
  auto label = [&](const std::string& pool_file, const std::string& out_file) {
    auto pool = read_jsonl((fs::path(c.world) / pool_file).string());
    std::vector<ScoreItem> items;
    for (const auto& r : pool) {
      items.push_back({r.at("prompt").get<std::string>(), r.at("response_a").get<std::string>()});
      items.push_back({r.at("prompt").get<std::string>(), r.at("response_b").get<std::string>()});
    }
    auto scores = gold->score(items);
    std::vector<json> pairs;
    int64_t ties = 0, flipped = 0;
    for (size_t i = 0; i < pool.size(); ++i) {
      double sa = scores[2 * i], sb = scores[2 * i + 1];
      if (sa == sb) {
        ++ties;
        continue;
      }
      bool a_wins = sa > sb;
      if (c.label_noise > 0 && uniform(rng) < c.label_noise) a_wins = !a_wins, ++flipped;
      pairs.push_back({{"prompt", pool[i]["prompt"]},
                       {"chosen", a_wins ? pool[i]["response_a"] : pool[i]["response_b"]},
                       {"rejected", a_wins ? pool[i]["response_b"] : pool[i]["response_a"]},
                       {"margin", std::abs(sa - sb)}});
    }
    write_jsonl(fs::path(out_dir) / out_file, pairs);
    log::info("label: {} -> {} pairs ({} ties dropped, {} flipped by noise)", pool_file, pairs.size(), ties,
              flipped);
  };
  label("pool.jsonl", "proxy_pairs.jsonl");
  label("eval_id_pool.jsonl", "eval_id.jsonl");
  for (const auto& family : c.ood_families)
    label("eval_ood_" + family + "_pool.jsonl", "eval_ood_" + family + ".jsonl");
}

}  // namespace grm
