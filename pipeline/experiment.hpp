// An experiment: one YAML file with defaults for every field, validated before anything runs, swept
// over any keys, and planned into the stage DAG
//   world -> gold_rm -> label -> proxy_rm (per sweep point) -> eval (per proxy)
//                                        \-> bon_samples -> bon (all proxies, gold-scored)
//                                        \-> ppo (per proxy of the methods in ppo.methods)
// whose stages are `grm` subcommands (pipeline/dag.hpp runs them); `grm run` then builds the report.
#pragma once

#include <string>
#include <vector>

#include "bon/best_of_n.hpp"
#include "core/config.hpp"
#include "pipeline/dag.hpp"
#include "pipeline/sweep.hpp"
#include "pipeline/world/world.hpp"
#include "ppo/ppo.hpp"
#include "rm/train_rm.hpp"

namespace grm {

struct LauncherConfig {
  std::string kind = "local";     // local | mpirun | srun
  int64_t np = 1;                 // ranks for data-parallel stages (reward-model training)
  int64_t max_cores = 0;          // core budget for concurrent stages; 0: all cores
  std::vector<std::string> args;  // extra mpirun / srun arguments
  template <class V>
  void visit(V& v) {
    v("kind", kind, Choices{"local", "mpirun", "srun"});
    v("np", np, Range::at_least(1));
    v("max_cores", max_cores, Range::at_least(0));
    v("args", args);
  }
};

struct GoldSection {
  // The gold RM's backbone: directory or name (policy/model_path.hpp); empty: the policy. A backbone of its
  // own (and its own tokenizer: scoring goes through text) is how real gold RMs differ from the policy.
  std::string model;
  RmConfig rm;
  OptimConfig optim;
  int64_t max_length = 128;
  bool serve = false;  // BoN and PPO score through a `grm serve` process of the gold RM (HTTP)
  template <class V>
  void visit(V& v) {
    v("model", model);
    v("serve", serve);
    v("rm", rm);
    v("optim", optim);
    v("max_length", max_length, Range::at_least(2));
  }
};

struct DataSection {
  int64_t size = 400;  // proxy training pairs (a prefix of the labelled pool)
  double label_noise = 0.0;
  template <class V>
  void visit(V& v) {
    v("size", size);
    v("label_noise", label_noise, Range::closed(0, 1));
  }
};

struct BonSection {
  bool enabled = true;  // per sweep point: whether the point's proxy is scored by Best-of-N
  // bon/best_of_n.hpp; policy, prompts, seed, samples_from, proxies and gold are filled in by the plan.
  // Fewer samples than `grm bon` draws by default: every proxy of a sweep scores all of them.
  BonConfig config = [] {
    BonConfig c;
    c.n_max = 64;
    c.n_prompts = 32;
    return c;
  }();
  template <class V>
  void visit(V& v) {
    v("enabled", enabled);
    v("config", config);
    v.renamed("n_max", "config.n_max");
    v.renamed("n_prompts", "config.n_prompts");
    v.renamed("max_new_tokens", "config.max_new_tokens");
    v.renamed("temperature", "config.temperature");
  }
};

struct PpoSection {
  bool enabled = true;                               // per sweep point, as are methods
  std::vector<std::string> methods = {"bt", "grm"};  // proxies of these methods get a PPO run
  // ppo/ppo.hpp; policy, prompts, proxy, gold and seed are filled in by the plan. It evaluates on the
  // world's held-out prompts, so by default on as many as the world holds (world.n_test_prompts).
  PpoConfig config = [] {
    PpoConfig c;
    c.n_eval_prompts = WorldConfig().n_test_prompts;
    return c;
  }();
  template <class V>
  void visit(V& v) {
    v("enabled", enabled);
    v("methods", methods);
    v("config", config);
  }
};

struct Experiment {
  std::string name = "experiment";
  std::string run_dir;  // default: runs/<name> beside the working directory
  uint64_t seed = 0;    // proxy RM / PPO seed (sweepable); the world has its own seed
  std::string policy = "tinystories-656k";
  LauncherConfig launcher;
  WorldConfig world;
  GoldSection gold;
  DataSection data;
  RmConfig rm;
  OptimConfig train;  // proxy RM optimisation
  int64_t max_length = 128;
  BonSection bon;
  PpoSection ppo;
  SweepConfig sweep;
  template <class V>
  void visit(V& v) {
    v("name", name);
    v("run_dir", run_dir);
    v("seed", seed);
    v("policy", policy);
    v("launcher", launcher);
    v("world", world);
    v("gold", gold);
    v("data", data);
    v("rm", rm);
    v("train", train);
    v("max_length", max_length, Range::at_least(2));
    v("bon", bon);
    v("ppo", ppo);
    v("sweep", sweep);
  }
};

struct Plan {
  Experiment base;                // without sweep values; `grm run` writes it, the experiment's
                                  // resolved config, to RUN_DIR/experiment.yaml
  std::vector<StageSpec> stages;  // in a valid run order
  std::string run_dir;
};

// Loads, applies --set overrides, validates (every sweep point too) and plans the DAG. The stages of a
// sweep point (proxy_rm, eval, ppo) are labelled with the settings they end up with, which the report
// groups by: method (method_label), alpha (grm's, else 0), size (data.size), head (rm.head) and seed,
// swept or not.
Plan plan_experiment(const std::string& path, const std::vector<std::string>& overrides);

// "grm", "grm-dpo", ... for GRM variants; "ensemble-uwo", ... for ensembles not combined by their mean;
// the method name otherwise. Reports group by it.
std::string method_label(const RmConfig& rm);

}  // namespace grm
