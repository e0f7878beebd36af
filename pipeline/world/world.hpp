// The default story world of the quickstart experiment (the paper's synthetic setup, on TinyStories):
//  - prompts: story openings drawn from seeded templates, in an in-distribution family ("once": "Once upon
//    a time, ... NAME loved to") and shifted families for out-of-distribution tests ("day": "One day, NAME
//    went to the PLACE with a ANIMAL. They saw", "dialogue": "\"...?\" said NAME. NAME's mom said").
//    Every set of prompts is distinct and disjoint from every other (split by distinct prompt, never by
//    index), so no evaluation pair or test prompt is a training prompt;
//  - the policy's own continuations, two per pair;
//  - gold pairs for the gold RM, labelled by the story oracle (rm/story_oracle.hpp): the oracle's preference,
//    flipped with probability gold_label_noise, oracle ties dropped. They come from every family (ID training
//    prompts and, per shifted family, prompts of its own), so the gold RM has seen each family it labels;
//  - unlabelled pools for proxy training (ID training prompts) and for ID/OOD evaluation (held-out prompts),
//    which the gold RM labels (stage `label`), optionally with label noise. Each evaluation pair keeps the
//    oracle's scores, so `label` measures how often the gold RM agrees with the oracle it stands for.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "core/config.hpp"

namespace grm {

struct WorldConfig {
  uint64_t seed = 0;
  int64_t n_train_prompts = 256;    // ID prompts of the proxy pool and the gold pairs
  int64_t n_test_prompts = 32;      // ID prompts held out: ID evaluation pairs, Best-of-N, PPO evaluation
  int64_t n_ood_prompts = 32;       // per shifted family, held out for its evaluation pairs
  int64_t n_gold_ood_prompts = 64;  // per shifted family, for the gold RM's pairs only
  std::vector<std::string> ood_families = {"day", "dialogue"};
  int64_t n_gold_pairs = 1500;  // oracle-labelled, for the gold RM, shared evenly by ID and each family
  double gold_label_noise = 0;  // probability that a gold pair's oracle label is flipped
  int64_t n_pool_pairs = 600;   // gold-RM-labelled, for proxy RMs (data.size takes a prefix)
  int64_t n_eval_pairs = 200;   // per evaluation set (id and each ood family)
  int64_t max_new_tokens = 48;
  double temperature = 1.0;
  int64_t threads = 0;
  template <class V>
  void visit(V& v) {
    v("seed", seed);
    v("n_train_prompts", n_train_prompts, Range::at_least(1));
    v("n_test_prompts", n_test_prompts, Range::at_least(1));
    v("n_ood_prompts", n_ood_prompts, Range::at_least(0));
    v("n_gold_ood_prompts", n_gold_ood_prompts, Range::at_least(0));
    v("ood_families", ood_families);
    v("n_gold_pairs", n_gold_pairs, Range::at_least(2));
    v("gold_label_noise", gold_label_noise, Range::closed(0, 1));
    v("n_pool_pairs", n_pool_pairs, Range::at_least(2));
    v("n_eval_pairs", n_eval_pairs, Range::at_least(1));
    v("max_new_tokens", max_new_tokens, Range::at_least(1));
    v("temperature", temperature, Range::at_least(0));
    v("threads", threads, Range::at_least(0));
  }
};

struct WorldStage {
  std::string policy = "tinystories-656k";
  WorldConfig world;
  template <class V>
  void visit(V& v) {
    v("policy", policy);
    v("world", world);
  }
};

struct LabelStage {
  std::string gold_model;  // the gold RM directory
  std::string world;       // the world stage's directory
  std::vector<std::string> ood_families = {"day", "dialogue"};
  double label_noise = 0;  // probability of flipping a proxy-training label (evaluation labels stay clean)
  uint64_t seed = 0;
  int64_t threads = 0;
  template <class V>
  void visit(V& v) {
    v("gold_model", gold_model);
    v("world", world);
    v("ood_families", ood_families);
    v("label_noise", label_noise, Range::closed(0, 1));
    v("seed", seed);
    v("threads", threads, Range::at_least(0));
  }
};

// Story openings of a family ("once", "day", "dialogue"), n of them, from a seed; the same on every
// platform (the seed is mixed with a fixed hash of the family name, not std::hash).
std::vector<std::string> story_prompts(const std::string& family, int64_t n, uint64_t seed);
// The world's prompt sets, each of distinct prompts and pairwise disjoint: "train" and "test" of the ID
// family, "ood_F" (held out) and "gold_F" (gold RM training only) per shifted family F. An error, before
// any sampling, when a family has too few distinct openings for the sizes asked.
std::map<std::string, std::vector<std::string>> world_prompt_sets(const WorldConfig& config);

// Writes prompts_{train,test,ood_F}.jsonl, gold_pairs.jsonl, pool.jsonl, eval_{id,ood_F}_pool.jsonl.
void build_world(const WorldStage& config, const std::string& out_dir, const std::string& config_dir = "");
// Writes proxy_pairs.jsonl and eval_{id,ood_F}.jsonl, labelled by the gold RM, and gold_quality.json: per
// evaluation set, how often the gold RM's preference agrees with the oracle's
//   {"sets": {"id": {"agreement": 0.74, "n": 150}, "ood_day": {...}, ...}}   (oracle ties left out)
void label_world(const LabelStage& config, const std::string& out_dir);

}  // namespace grm
