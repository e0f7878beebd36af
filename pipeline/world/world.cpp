#include "pipeline/world/world.hpp"

#include <cmath>
#include <filesystem>
#include <random>
#include <set>
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

// FNV-1a: a hash of the family name that is the same under every standard library (std::hash is not).
uint64_t fnv1a(const std::string& text) {
  uint64_t hash = 14695981039346656037ULL;
  for (unsigned char ch : text) hash = (hash ^ ch) * 1099511628211ULL;
  return hash;
}

}  // namespace

std::vector<std::string> story_prompts(const std::string& family, int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed * 7919ULL + fnv1a(family));
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

std::map<std::string, std::vector<std::string>> world_prompt_sets(const WorldConfig& w) {
  // n distinct openings of a family, in order of first draw; a family's template space is finite.
  auto distinct = [&](const std::string& family, int64_t n, const std::string& what) {
    std::vector<std::string> chosen;
    std::set<std::string> seen;
    const int64_t batch = 256;
    for (uint64_t round = 0; int64_t(chosen.size()) < n; ++round) {
      if (round * batch > uint64_t(50 * n + 1000))
        fail(
            "world: the '{}' family has only {} distinct openings, fewer than the {} needed ({}); lower them",
            family, chosen.size(), n, what);
      for (const auto& prompt : story_prompts(family, batch, w.seed * 1000003ULL + round))
        if (int64_t(chosen.size()) < n && seen.insert(prompt).second) chosen.push_back(prompt);
    }
    return chosen;
  };
  std::map<std::string, std::vector<std::string>> sets;
  auto split = [&](const std::vector<std::string>& all, int64_t first, const std::string& a,
                   const std::string& b) {
    sets[a].assign(all.begin(), all.begin() + first);
    sets[b].assign(all.begin() + first, all.end());
  };
  split(
      distinct("once", w.n_train_prompts + w.n_test_prompts, "world.n_train_prompts + world.n_test_prompts"),
      w.n_train_prompts, "train", "test");
  for (const auto& family : w.ood_families)
    split(distinct(family, w.n_ood_prompts + w.n_gold_ood_prompts,
                   "world.n_ood_prompts + world.n_gold_ood_prompts"),
          w.n_ood_prompts, "ood_" + family, "gold_" + family);
  return sets;
}

void build_world(const WorldStage& stage, const std::string& out_dir, const std::string& config_dir) {
  const auto& w = stage.world;
  set_compute_threads(int(w.threads > 0 ? w.threads : default_thread_count(1)));
  fs::create_directories(out_dir);
  fs::path out(out_dir);
  auto prompt_sets = world_prompt_sets(w);
  auto prompt_records = [](const std::vector<std::string>& prompts) {
    std::vector<json> records;
    for (size_t i = 0; i < prompts.size(); ++i) records.push_back({{"id", i}, {"prompt", prompts[i]}});
    return records;
  };
  write_jsonl(out / "prompts_train.jsonl", prompt_records(prompt_sets["train"]));
  write_jsonl(out / "prompts_test.jsonl", prompt_records(prompt_sets["test"]));
  for (const auto& family : w.ood_families)
    write_jsonl(out / ("prompts_ood_" + family + ".jsonl"), prompt_records(prompt_sets["ood_" + family]));

  // Every pair needs two continuations of one prompt: list the prompts of all pairs, then sample once.
  struct PairSlot {
    std::string set, prompt;
  };
  std::vector<PairSlot> slots;
  auto add_slots = [&](const std::string& set, const std::vector<std::string>& prompts, int64_t n) {
    if (n > 0 && prompts.empty()) fail("world: {} pairs asked for set '{}', which has no prompts", n, set);
    for (int64_t i = 0; i < n; ++i) slots.push_back({set, prompts[size_t(i) % prompts.size()]});
  };
  // The gold pairs are shared evenly by the ID family and each shifted family (the first get the rest).
  int64_t n_families = 1 + int64_t(w.ood_families.size());
  for (int64_t f = 0; f < n_families; ++f) {
    int64_t share = w.n_gold_pairs / n_families + (f < w.n_gold_pairs % n_families ? 1 : 0);
    add_slots("gold", f == 0 ? prompt_sets["train"] : prompt_sets["gold_" + w.ood_families[size_t(f - 1)]],
              share);
  }
  add_slots("pool", prompt_sets["train"], w.n_pool_pairs);
  add_slots("eval_id", prompt_sets["test"], w.n_eval_pairs);
  for (const auto& family : w.ood_families)
    add_slots("eval_ood_" + family, prompt_sets["ood_" + family], w.n_eval_pairs);

  std::string model_dir = resolve_model_path(stage.policy, config_dir);
  auto model = load_causal_lm(model_dir);
  auto tokenizer = load_tokenizer(model_dir);
  std::vector<std::vector<int64_t>> rows;
  for (const auto& slot : slots) {
    auto ids = tokenizer->encode(slot.prompt);
    rows.push_back(ids);
    rows.push_back(ids);
  }
  GenerateOptions options = generate_options_for(model->config(), *tokenizer);
  options.max_new_tokens = w.max_new_tokens;
  options.sampling.temperature = w.temperature;
  options.seed = w.seed;
  options.batch_size = 64;
  log::info("world: sampling {} continuations for {} pairs", rows.size(), slots.size());
  auto generation = generate(model, rows, options, [](int64_t done, int64_t total) {
    if (done % 1024 == 0 || done == total) log::info("world: sampled {}/{}", done, total);
  });

  std::mt19937_64 rng(w.seed + 17);
  std::uniform_real_distribution<double> uniform(0, 1);
  std::map<std::string, std::vector<json>> sets;
  int64_t oracle_ties = 0, flipped = 0;
  for (size_t i = 0; i < slots.size(); ++i) {
    const auto& prompt_ids = rows[2 * i];
    std::string a = decode_continuation(*tokenizer, prompt_ids, generation.tokens[2 * i], options.eos_ids);
    std::string b =
        decode_continuation(*tokenizer, prompt_ids, generation.tokens[2 * i + 1], options.eos_ids);
    const auto& slot = slots[i];
    double sa = story_oracle_score(slot.prompt, a), sb = story_oracle_score(slot.prompt, b);
    if (slot.set == "gold") {
      if (sa == sb) {
        ++oracle_ties;
        continue;
      }
      bool a_wins = sa > sb;
      if (w.gold_label_noise > 0 && uniform(rng) < w.gold_label_noise) a_wins = !a_wins, ++flipped;
      sets[slot.set].push_back({{"prompt", slot.prompt},
                                {"chosen", a_wins ? a : b},
                                {"rejected", a_wins ? b : a},
                                {"oracle_margin", std::abs(sa - sb)}});
    } else {
      sets[slot.set].push_back({{"prompt", slot.prompt},
                                {"response_a", a},
                                {"response_b", b},
                                {"oracle_a", sa},
                                {"oracle_b", sb}});
    }
  }
  write_jsonl(out / "gold_pairs.jsonl", sets["gold"]);
  write_jsonl(out / "pool.jsonl", sets["pool"]);
  write_jsonl(out / "eval_id_pool.jsonl", sets["eval_id"]);
  for (const auto& family : w.ood_families)
    write_jsonl(out / ("eval_ood_" + family + "_pool.jsonl"), sets["eval_ood_" + family]);
  log::info(
      "world: {} gold pairs from {} families ({} oracle ties dropped, {} labels flipped), {} pool pairs, "
      "{} eval pairs per set",
      sets["gold"].size(), n_families, oracle_ties, flipped, sets["pool"].size(), w.n_eval_pairs);
}

void label_world(const LabelStage& c, const std::string& out_dir) {
  set_compute_threads(int(c.threads > 0 ? c.threads : default_thread_count(1)));
  fs::create_directories(out_dir);
  auto gold = make_model_scorer(c.gold_model);
  std::mt19937_64 rng(c.seed + 23);
  std::uniform_real_distribution<double> uniform(0, 1);
  json quality = {{"sets", json::object()}};
  auto label = [&](const std::string& pool_file, const std::string& out_file,
                   const std::string& quality_set) {
    auto pool = read_jsonl((fs::path(c.world) / pool_file).string());
    std::vector<ScoreItem> items;
    for (const auto& r : pool) {
      items.push_back({r.at("prompt").get<std::string>(), r.at("response_a").get<std::string>()});
      items.push_back({r.at("prompt").get<std::string>(), r.at("response_b").get<std::string>()});
    }
    log::info("label: scoring {} responses of {} with the gold RM", items.size(), pool_file);
    auto scores = gold->score(items);
    std::vector<json> pairs;
    int64_t ties = 0, flipped = 0, agree = 0, compared = 0;
    for (size_t i = 0; i < pool.size(); ++i) {
      double sa = scores[2 * i], sb = scores[2 * i + 1];
      if (pool[i].contains("oracle_a") && pool[i]["oracle_a"] != pool[i]["oracle_b"]) {
        bool oracle_a_wins = pool[i]["oracle_a"].get<double>() > pool[i]["oracle_b"].get<double>();
        ++compared;
        agree += (sa > sb) == oracle_a_wins && sa != sb ? 1 : 0;
      }
      if (sa == sb) {
        ++ties;
        continue;
      }
      bool a_wins = sa > sb;
      if (quality_set.empty() && c.label_noise > 0 && uniform(rng) < c.label_noise)
        a_wins = !a_wins, ++flipped;
      pairs.push_back({{"prompt", pool[i]["prompt"]},
                       {"chosen", a_wins ? pool[i]["response_a"] : pool[i]["response_b"]},
                       {"rejected", a_wins ? pool[i]["response_b"] : pool[i]["response_a"]},
                       {"margin", std::abs(sa - sb)}});
    }
    write_jsonl(fs::path(out_dir) / out_file, pairs);
    if (!quality_set.empty() && compared > 0)
      quality["sets"][quality_set] = {{"agreement", double(agree) / double(compared)}, {"n", compared}};
    log::info("label: {} -> {} pairs ({} ties dropped, {} flipped by noise){}", pool_file, pairs.size(), ties,
              flipped,
              compared > 0 ? fmt::format("; the gold RM agrees with the oracle on {:.1f}% of {} pairs",
                                         100.0 * double(agree) / double(compared), compared)
                           : "");
  };
  label("pool.jsonl", "proxy_pairs.jsonl", "");
  label("eval_id_pool.jsonl", "eval_id.jsonl", "id");
  for (const auto& family : c.ood_families)
    label("eval_ood_" + family + "_pool.jsonl", "eval_ood_" + family + ".jsonl", "ood_" + family);
  write_file_atomic((fs::path(out_dir) / "gold_quality.json").string(), quality.dump(2) + "\n");
}

}  // namespace grm
