#include "pipeline/experiment.hpp"

#include <filesystem>
#include <thread>

#include <fmt/ranges.h>  // fmt::join (in fmt/format.h before fmt 11)

#include "bon/best_of_n.hpp"
#include "core/error.hpp"
#include "policy/model_path.hpp"
#include "ppo/ppo.hpp"
#include "rm/eval_rm.hpp"

namespace grm {
namespace {

namespace fs = std::filesystem;

std::string number_label(double value) {
  return fmt::format("{}", value);
}

StageSpec stage(std::string name, std::string subcommand, YAML::Node config, std::vector<std::string> deps,
                int ranks, int cores) {
  StageSpec spec;
  spec.name = std::move(name);
  spec.subcommand = std::move(subcommand);
  spec.config = std::move(config);
  spec.deps = std::move(deps);
  spec.ranks = ranks;
  spec.cores = cores;
  return spec;
}

// Sizes that cannot work together, found before any stage runs (each message names the keys to change).
void check_sizes(const Experiment& e, const std::string& path) {
  const WorldConfig& w = e.world;
  if (e.data.size > w.n_pool_pairs)
    fail(
        "{}: data.size {} is larger than the labelled pool (world.n_pool_pairs {}); lower data.size or raise "
        "world.n_pool_pairs",
        path, e.data.size, w.n_pool_pairs);
  if (e.data.size < 2)
    fail("{}: data.size {} leaves the proxy nothing to learn from; use at least 2", path, e.data.size);
  if (!w.ood_families.empty() &&
      (w.n_gold_ood_prompts < 1 || w.n_gold_pairs < 1 + int64_t(w.ood_families.size())))
    fail(
        "{}: the gold RM labels the OOD families {} but would be trained on no pairs of them "
        "(world.n_gold_ood_prompts {}, world.n_gold_pairs {}); raise them",
        path, fmt::format("{}", fmt::join(w.ood_families, ", ")), w.n_gold_ood_prompts, w.n_gold_pairs);
  if (e.bon.enabled && e.bon.config.n_prompts > w.n_test_prompts)
    fail(
        "{}: bon.config.n_prompts {} is more than the held-out prompts (world.n_test_prompts {}); lower it "
        "or "
        "raise world.n_test_prompts",
        path, e.bon.config.n_prompts, w.n_test_prompts);
  if (e.ppo.enabled && e.ppo.config.n_eval_prompts > w.n_test_prompts)
    fail(
        "{}: ppo.config.n_eval_prompts {} is more than the held-out prompts (world.n_test_prompts {}); lower "
        "it or raise world.n_test_prompts",
        path, e.ppo.config.n_eval_prompts, w.n_test_prompts);
}

}  // namespace

std::string method_label(const RmConfig& rm) {
  if (rm.method == "ensemble" && rm.ensemble.combine != "mean") return "ensemble-" + rm.ensemble.combine;
  if (rm.method != "grm") return rm.method;
  return rm.reg == "sft" ? "grm" : "grm-" + rm.reg;
}

Plan plan_experiment(const std::string& path, const std::vector<std::string>& overrides) {
  YAML::Node root = load_yaml_file(path);
  if (!root.IsMap()) fail("{}: an experiment must be a YAML mapping of sections", path);
  for (const auto& assignment : overrides) apply_checked_override<Experiment>(root, assignment);
  Plan plan;
  plan.base = read_config<Experiment>(root, path);
  const Experiment& base = plan.base;
  check_sizes(base, path);
  std::string config_dir = fs::absolute(path).parent_path().string();
  std::string policy_dir = resolve_model_path(base.policy, config_dir);
  plan.run_dir = fs::absolute(base.run_dir.empty() ? fs::path("runs") / base.name : fs::path(base.run_dir))
                     .lexically_normal()
                     .string();
  int cores = int(base.launcher.max_cores > 0 ? base.launcher.max_cores
                                              : std::max(1u, std::thread::hardware_concurrency()));
  int ranks = int(std::max<int64_t>(1, base.launcher.np));
  auto& stages = plan.stages;

  WorldStage world{policy_dir, base.world};
  StageSpec world_spec = stage("world", "world", to_yaml(world), {}, 1, cores);
  std::string world_id = add_stage(stages, world_spec);

  TrainRmConfig gold;
  gold.model = base.gold.model.empty() ? policy_dir : resolve_model_path(base.gold.model, config_dir);
  gold.max_length = base.gold.max_length;
  gold.seed = base.world.seed + 1000;  // a head initialisation of its own, unlike any proxy's
  gold.data.path = "@world/gold_pairs.jsonl";
  gold.rm = base.gold.rm;
  gold.optim = base.gold.optim;
  gold.eval_fraction = 0.1;
  gold.threads = 0;
  std::string gold_id = add_stage(stages, stage("gold_rm", "train-rm", to_yaml(gold), {world_id}, ranks, 1));

  LabelStage label{"@gold_rm/model", "@world", base.world.ood_families, base.data.label_noise,
                   base.world.seed};
  std::string label_id =
      add_stage(stages, stage("label", "label", to_yaml(label), {world_id, gold_id}, 1, cores));

  std::vector<std::string> proxy_ids;  // the proxies Best-of-N scores: those of points with bon.enabled
  for (const auto& point : expand_sweep(root, path, config_key_check<Experiment>())) {
    Experiment e = read_config<Experiment>(point.config, path);
    check_sizes(e, path);
    // Settings a method does not read are reset, so that sweeping alpha leaves one baseline, not five.
    if (e.rm.method != "grm")
      e.rm.alpha = RmConfig().alpha, e.rm.beta = RmConfig().beta, e.rm.reg = RmConfig().reg;
    if (e.rm.method != "label_smooth") e.rm.label_smoothing = RmConfig().label_smoothing;
    if (e.rm.method != "margin") e.rm.margin_scale = RmConfig().margin_scale;
    if (e.rm.method != "ensemble") e.rm.ensemble = EnsembleConfig();
    if (e.rm.method != "bsr") e.rm.bsr_lambda = RmConfig().bsr_lambda;
    if (e.rm.method != "center") e.rm.center_coef = RmConfig().center_coef;
    if (e.rm.method != "inform") e.rm.inform = InfoRmConfig();
    if (e.rm.method != "odin") e.rm.odin = OdinConfig();
    if (e.rm.method != "warm") e.rm.warm = WarmConfig();
    std::map<std::string, std::string> labels = {
        {"method", method_label(e.rm)},
        {"alpha", number_label(e.rm.method == "grm" ? e.rm.alpha : 0.0)},
        {"size", std::to_string(e.data.size)},
        {"head", e.rm.head},
        {"seed", std::to_string(e.seed)}};
    // One Best-of-N sample set serves every proxy: a point may leave BoN out, not change how it samples.
    if (YAML::Dump(to_yaml(e.bon.config)) != YAML::Dump(to_yaml(base.bon.config)))
      fail(
          "{}: a sweep point changes bon.config, which is one for the whole experiment; sweep bon.enabled "
          "to leave a point out of Best-of-N",
          path);
    TrainRmConfig proxy;
    proxy.model = policy_dir;
    proxy.max_length = e.max_length;
    proxy.seed = e.seed;
    proxy.data.path = "@label/proxy_pairs.jsonl";
    proxy.data.limit = e.data.size;
    // `label` writes the gold RM's reward gap as each pair's margin; only the margin loss reads it.
    if (e.rm.method == "margin") proxy.data.margin_field = "margin";
    proxy.eval_fraction = 0;
    proxy.rm = e.rm;
    proxy.optim = e.train;
    proxy.threads = 0;
    StageSpec proxy_spec = stage("proxy_rm", "train-rm", to_yaml(proxy), {label_id}, ranks, 1);
    proxy_spec.labels = labels;
    std::string proxy_id = add_stage(stages, proxy_spec);
    if (e.bon.enabled && std::find(proxy_ids.begin(), proxy_ids.end(), proxy_id) == proxy_ids.end())
      proxy_ids.push_back(proxy_id);

    EvalRmConfig eval;
    eval.scorer.model = "@proxy_rm/model";
    eval.sets["id"].data.path = "@label/eval_id.jsonl";
    for (const auto& family : e.world.ood_families)
      eval.sets["ood_" + family].data.path = "@label/eval_ood_" + family + ".jsonl";
    StageSpec eval_spec = stage("eval", "eval-rm", to_yaml(eval), {proxy_id, label_id}, 1, 1);
    eval_spec.labels = labels;
    add_stage(stages, eval_spec);

    if (e.ppo.enabled &&
        std::find(e.ppo.methods.begin(), e.ppo.methods.end(), method_label(e.rm)) != e.ppo.methods.end()) {
      PpoConfig ppo = e.ppo.config;
      ppo.policy = policy_dir;
      ppo.prompt_file = "@world/prompts_train.jsonl";
      ppo.prompt_list.clear();
      ppo.eval_prompt_file = "@world/prompts_test.jsonl";
      ppo.eval_prompt_list.clear();
      ppo.proxy = ScorerConfig();
      ppo.proxy.model = "@proxy_rm/model";
      ppo.gold = ScorerConfig();
      ppo.gold->model = "@gold_rm/model";
      ppo.gold->serve = e.gold.serve;
      ppo.seed = e.seed;
      StageSpec ppo_spec = stage("ppo", "ppo", to_yaml(ppo), {world_id, gold_id, proxy_id}, 1, 1);
      ppo_spec.labels = labels;
      add_stage(stages, ppo_spec);
    }
  }

  if (!proxy_ids.empty()) {
    // One sampling stage for every proxy, then one scoring stage; each takes its part of bon.config.
    BonConfig samples = base.bon.config;
    samples.policy = policy_dir;
    samples.prompt_file = "@world/prompts_test.jsonl";
    samples.prompt_list.clear();
    samples.seed = base.world.seed;
    samples.samples_from.clear();
    samples.proxies.clear();
    samples.proxy_models.clear();
    samples.gold = ScorerConfig();
    samples.bootstrap = BonConfig().bootstrap;  // read when scoring: a new value re-scores, not re-samples
    std::string samples_id =
        add_stage(stages, stage("bon_samples", "bon", to_yaml(samples), {world_id}, 1, cores));
    BonConfig bon;
    bon.bootstrap = base.bon.config.bootstrap;
    bon.threads = base.bon.config.threads;
    bon.samples_from = "@bon_samples/samples.jsonl";
    bon.gold.model = "@gold_rm/model";
    bon.gold.serve = base.gold.serve;
    std::vector<std::string> deps = {samples_id, gold_id};
    for (size_t i = 0; i < proxy_ids.size(); ++i) {
      bon.proxy_models.push_back(i == 0 ? "@proxy_rm/model" : fmt::format("@proxy_rm#{}/model", i));
      deps.push_back(proxy_ids[i]);
    }
    add_stage(stages, stage("bon", "bon", to_yaml(bon), deps, 1, cores));
  }
  return plan;
}

}  // namespace grm
