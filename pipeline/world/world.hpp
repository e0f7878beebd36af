// The default story world of the quickstart experiment (the paper's synthetic setup, on TinyStories):
//  - prompts: story openings drawn from seeded templates, in an in-distribution family ("once": "Once upon
//    a time, ... NAME loved to") split train/test, and shifted families for out-of-distribution tests
//    ("day": "One day, NAME went to the PLACE with a ANIMAL. They saw", "dialogue": "\"...?\" said NAME.
//    NAME's mom said");
//  - the policy's own continuations, two per pair;
//  - gold pairs labelled by the story oracle (rm/story_oracle.hpp) with Bradley-Terry sampling:
//    a is preferred with probability sigmoid(oracle(a) - oracle(b));
//  - unlabelled pools for proxy training and for ID/OOD evaluation, which the gold RM labels (stage
//    `label`), optionally with label noise.
#pragma once

#include <string>
#include <vector>

#include "core/config.hpp"

namespace grm {

struct WorldConfig {
  uint64_t seed = 0;
  int64_t n_train_prompts = 256;
  int64_t n_test_prompts = 32;
  int64_t n_ood_prompts = 32;  // per shifted family
  std::vector<std::string> ood_families = {"day", "dialogue"};
  int64_t n_gold_pairs = 1500;  // oracle-labelled, for the gold RM
  int64_t n_pool_pairs = 600;   // gold-RM-labelled, for proxy RMs (data.size takes a prefix)
  int64_t n_eval_pairs = 200;   // per evaluation set (id and each ood family)
  int64_t max_new_tokens = 48;
  double temperature = 1.0;
  int64_t threads = 0;
  template <class V>
  void visit(V& v) {
    v("seed", seed);
    v("n_train_prompts", n_train_prompts);
    v("n_test_prompts", n_test_prompts);
    v("n_ood_prompts", n_ood_prompts);
    v("ood_families", ood_families);
    v("n_gold_pairs", n_gold_pairs);
    v("n_pool_pairs", n_pool_pairs);
    v("n_eval_pairs", n_eval_pairs);
    v("max_new_tokens", max_new_tokens);
    v("temperature", temperature);
    v("threads", threads);
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
  double label_noise = 0;  // probability of flipping a gold label
  uint64_t seed = 0;
  int64_t threads = 0;
  template <class V>
  void visit(V& v) {
    v("gold_model", gold_model);
    v("world", world);
    v("ood_families", ood_families);
    v("label_noise", label_noise);
    v("seed", seed);
    v("threads", threads);
  }
};

// Story openings of a family ("once", "day", "dialogue"), n of them, from a seed.
std::vector<std::string> story_prompts(const std::string& family, int64_t n, uint64_t seed);

// Writes prompts_{train,test,ood_F}.jsonl, gold_pairs.jsonl, pool.jsonl, eval_{id,ood_F}_pool.jsonl.
void build_world(const WorldStage& config, const std::string& out_dir, const std::string& config_dir = "");
// Writes proxy_pairs.jsonl and eval_{id,ood_F}.jsonl, labelled by the gold RM.
void label_world(const LabelStage& config, const std::string& out_dir);

}  // namespace grm
