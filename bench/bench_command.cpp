// `grm bench ...`: speed measurements on this machine (never timed tests). Each prints what it measured,
// on what, and the number, so it can be quoted with the machine it ran on.
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <thread>

#include <CLI/CLI.hpp>

#include <filesystem>
#include <random>

#include "bench/bench.hpp"
#include "bench/serve_load.hpp"
#include "bench/tokenize_bench.hpp"
#include "cluster/comm.hpp"
#include "core/atomic_file.hpp"
#include "core/log.hpp"
#include "policy/generate.hpp"
#include "policy/model_path.hpp"
#include "policy/tokenizer/tokenizer.hpp"
#include "rm/reward_model.hpp"
#include "rm/scorer.hpp"
#include "rm/serve/server.hpp"
#include "rm/train_rm.hpp"
#include "rm/train_state.hpp"

#ifdef GRM_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace grm {
namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::filesystem::path bench_dir(const std::string& name) {
  // Ranks of one mpirun job share their launcher as parent, so they agree on the folder.
  int owner = launched_by_mpi() ? ::getppid() : ::getpid();
  auto dir = std::filesystem::temp_directory_path() / fmt::format("grm_bench_{}_{}", name, owner);
  std::filesystem::create_directories(dir);
  return dir;
}

// A randomly initialised model of the shape in config_json, saved with the tokenizer of `tokenizer_dir`
// (its ids fit any vocabulary at least as large): speed does not depend on the weights.
std::string random_model(const std::string& config_json, const std::string& tokenizer_dir,
                         const std::filesystem::path& where) {
  torch::manual_seed(0);
  CausalLM model(ModelConfig::from_file(config_json));
  save_causal_lm(model, where.string());
  copy_tokenizer_files(tokenizer_dir, where.string());
  return where.string();
}

struct BenchGenerate {
  std::string model_dir = "tinystories-656k";  // name or directory (policy/model_path.hpp)
  std::string random_config;                   // time a randomly initialised model of this config.json
  int64_t prompt_tokens = 0;                   // 0: the text "Once upon a time"; else prompts of this length
  int64_t batch = 64;
  int64_t new_tokens = 128;
  int threads = 0;  // 0: all cores
  int repeats = 3;
};

void run_bench_generate(const BenchGenerate& b) {
  set_compute_threads(b.threads > 0 ? b.threads : int(std::max(1u, std::thread::hardware_concurrency())));
  std::string dir = resolve_model_path(b.model_dir);
  if (!b.random_config.empty()) dir = random_model(b.random_config, dir, bench_dir("generate") / "random");
  auto model = load_causal_lm(dir);
  if (torch::cuda::is_available()) model->to(torch::kCUDA);
  auto tokenizer = load_tokenizer(dir);
  const auto text = tokenizer->encode("Once upon a time");
  auto prompt = text;
  while (b.prompt_tokens > 0 && int64_t(prompt.size()) < b.prompt_tokens)
    prompt.push_back(text[prompt.size() % text.size()]);
  if (b.prompt_tokens > 0) prompt.resize(size_t(b.prompt_tokens));
  std::vector<std::vector<int64_t>> prompts(size_t(b.batch), prompt);
  GenerateOptions options;
  options.max_new_tokens = b.new_tokens;
  options.batch_size = b.batch;       // one batch; no EOS so every row decodes all tokens
  generate(model, prompts, options);  // warm-up
  double best = 0;
  for (int r = 0; r < b.repeats; ++r) {
    options.seed = uint64_t(r);
    auto start = std::chrono::steady_clock::now();
    auto out = generate(model, prompts, options);
    double rate = double(out.generated_tokens) / seconds_since(start);
    best = std::max(best, rate);
    std::printf("generate: %s batch %lld x %lld new tokens, %d LibTorch thread(s) (BLAS %d): %.0f tokens/s\n",
                dir.c_str(), (long long)b.batch, (long long)b.new_tokens, out.threads, blas_thread_count(),
                rate);
  }
  std::printf("generate best: %.0f tokens/s\n", best);
}

// A reward model on the benchmark backbone with a fresh head, saved with its tokenizer: what BoN and
// serving cost does not depend on what the head has learned.
std::string fresh_reward_model(const std::string& model_dir, const std::filesystem::path& where) {
  auto rm = make_reward_model(model_dir, {"mlp", 1024}, 0);
  save_reward_model(rm, where.string());
  copy_tokenizer_files(model_dir, where.string());
  return where.string();
}

struct BenchTokenize {
  std::string tokenizer = "tinystories-656k";
  std::string data = "../shared/data/hh_rlhf_harmless_test.jsonl.gz";
  int threads = 2;
};

// Peak resident memory of this process since the last reset, in MiB (Linux: VmHWM, reset through
// /proc/self/clear_refs), so a benchmark can report the high-water mark of its own work on the CPU.
void reset_peak_rss() {
  std::ofstream("/proc/self/clear_refs") << "5";
}
double peak_rss_mib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;  // in kB
  return NAN;
}

struct BenchTrainRm {
  std::string model_dir = "tinystories-656k";
  std::string random_config;  // a config.json: benchmark a randomly initialised model of that shape
  std::string device = "auto";
  int64_t pairs_per_rank = 8;
  int64_t tokens = 128;  // per sequence
  int64_t steps = 20;
  std::string method = "grm";
  bool gradient_checkpointing = false;
  int64_t logprob_chunk = 8192;
  bool lora = false;
  std::string shard = "none";
};

void run_bench_train_rm(const BenchTrainRm& b) {
  auto& comm = Comm::world();
  auto base = bench_dir("train_rm");
  std::string dir = resolve_model_path(b.model_dir);
  if (!b.random_config.empty()) {
    if (comm.is_root()) random_model(b.random_config, dir, base / "random");
    comm.barrier();
    dir = (base / "random").string();
  }
  // Pairs of random words long enough to fill `tokens` tokens: the speed does not depend on the text.
  auto tokenizer = load_tokenizer(dir);
  std::mt19937_64 rng(1);
  std::string data;
  for (int64_t i = 0; i < (b.steps + 1) * b.pairs_per_rank * comm.size(); ++i) {
    auto words = [&] {
      std::string text;
      while (int64_t(tokenizer->encode(text).size()) < b.tokens - 8)
        for (int w = 0; w < 8; ++w) text += " word" + std::to_string(rng() % 500);
      return text;
    };
    data +=
        nlohmann::json({{"prompt", "Once upon a time"}, {"chosen", words()}, {"rejected", words()}}).dump() +
        "\n";
  }
  TrainRmConfig c;
  c.model = dir;
  c.data.path = (base / "pairs.jsonl").string();
  if (comm.is_root()) write_file_atomic(c.data.path, data);
  comm.barrier();
  c.max_length = b.tokens;
  c.eval_fraction = 0;
  c.rm.method = b.method;
  c.optim.batch_size = b.pairs_per_rank;
  c.optim.max_steps = b.steps;
  c.log_every = b.steps;
  c.checkpoint_every = 0;
  c.device = b.device;
  c.optim.warmup_ratio = 0;
  c.gradient_checkpointing = b.gradient_checkpointing;
  c.logprob_chunk = b.logprob_chunk;
  if (b.lora) c.rm.finetune = "lora";
  c.optim.shard = b.shard;
  bool cuda = training_device(b.device).is_cuda();
#ifdef GRM_CUDA
  if (cuda) c10::cuda::CUDACachingAllocator::resetPeakStats(0);
#endif
  reset_peak_rss();
  auto result = train_reward_model(c, (base / "out").string());
  double peak_mib = peak_rss_mib();
  std::string peak_what = "peak RSS";
#ifdef GRM_CUDA
  if (cuda) {
    auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(0);
    peak_mib = double(stats.allocated_bytes[0].peak) / (1 << 20);
    peak_what = "peak CUDA allocated";
  }
#endif
  (void)cuda;
  if (comm.is_root()) {
    // Model FLOPs per token of a training step: 6 x parameters (forward + backward) plus attention.
    auto config = ModelConfig::from_file(dir);
    double params = double(config.n_layer) * (2.0 * config.n_embd * config.n_head * config.head_dim +
                                              2.0 * config.n_embd * config.n_kv_head * config.head_dim +
                                              3.0 * config.n_embd * config.n_ff) +
                    double(config.n_vocab) * config.n_embd;
    double flops_per_token = 6 * params + 12.0 * config.n_layer * config.n_head * config.head_dim * b.tokens;
    std::printf(
        "train-rm: %s, %d rank(s) x %lld pairs x 2 x %lld tokens, method %s%s%s, %d LibTorch thread(s) per "
        "rank (BLAS %d): %.0f tokens/s, %.2f model GFLOP/s, %s %.0f MiB (rank 0, during training)\n",
        dir.c_str(), comm.size(), (long long)b.pairs_per_rank, (long long)b.tokens, b.method.c_str(),
        b.lora ? ", LoRA" : "", b.gradient_checkpointing ? ", gradient checkpointing" : "",
        torch::get_num_threads(), blas_thread_count(), result.tokens_per_second,
        result.tokens_per_second * flops_per_token / 1e9, peak_what.c_str(), peak_mib);
    std::filesystem::remove_all(base);
  }
}

struct BenchBon {
  std::string model_dir = "tinystories-656k";
  int64_t n = 256;
  int64_t prompts = 2;
  int64_t new_tokens = 48;
};

void run_bench_bon(const BenchBon& b) {
  set_compute_threads(default_thread_count(1));
  std::string dir = resolve_model_path(b.model_dir);
  auto model = load_causal_lm(dir);
  auto tokenizer = load_tokenizer(dir);
  auto base = bench_dir("bon");
  auto scorer = make_model_scorer(fresh_reward_model(dir, base / "rm"));
  GenerateOptions options = generate_options_for(model->config(), *tokenizer);
  options.max_new_tokens = b.new_tokens;
  options.batch_size = b.n;
  double generate_seconds = 0, score_seconds = 0;
  int64_t tokens = 0, samples = 0;
  for (int64_t p = 0; p < b.prompts; ++p) {
    auto prompt = tokenizer->encode("Once upon a time, there was a little dog named Max. Max loved to");
    options.seed = uint64_t(p);
    auto start = std::chrono::steady_clock::now();
    auto out = generate(model, std::vector<std::vector<int64_t>>(size_t(b.n), prompt), options);
    generate_seconds += seconds_since(start);
    std::vector<ScoreItem> items;
    for (const auto& row : out.tokens)
      items.push_back({"Once upon a time, there was a little dog named Max. Max loved to",
                       decode_continuation(*tokenizer, prompt, row, options.eos_ids)});
    start = std::chrono::steady_clock::now();
    scorer->score(items);
    score_seconds += seconds_since(start);
    tokens += out.generated_tokens, samples += b.n;
  }
  std::printf("bon: %s N = %lld, %lld prompts, %d threads: %.0f generated tokens/s, %.0f scored samples/s\n",
              dir.c_str(), (long long)b.n, (long long)b.prompts, torch::get_num_threads(),
              double(tokens) / generate_seconds, double(samples) / score_seconds);
  std::filesystem::remove_all(base);
}

struct BenchServe {
  std::string model_dir = "tinystories-656k";
  int requests = 10000;
  int concurrency = 64;
  int texts_per_request = 1;
};

void run_bench_serve(const BenchServe& b) {
  set_compute_threads(default_thread_count(1));
  std::string dir = resolve_model_path(b.model_dir);
  auto base = bench_dir("serve");
  auto scorer = make_model_scorer(fresh_reward_model(dir, base / "rm"), 64);
  ServerOptions options;
  options.port = 0;
  RewardServer server(options, [&](const std::vector<ScoreItem>& items) { return scorer->score(items); });
  server.start();
  auto url = fmt::format("http://127.0.0.1:{}/get_reward", server.port());
  auto result = run_load_test(url, b.requests, b.concurrency, b.texts_per_request);
  std::printf("serve: reward model on %s\n%s\n", dir.c_str(), format_load_result(result).c_str());
  server.stop();
  std::filesystem::remove_all(base);
  if (result.n_failures > 0) fail("{} of {} requests failed", result.n_failures, b.requests);
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto* bench = app.add_subcommand("bench", "Benchmarks (generate, tokenize, train-rm, bon, serve)");
  bench->require_subcommand(1);
  auto gen = std::make_shared<BenchGenerate>();
  auto* g = bench->add_subcommand("generate", "KV-cache sampling throughput");
  g->add_option("--model", gen->model_dir, "model directory");
  g->add_option("--random-config", gen->random_config, "config.json of a randomly initialised model to time");
  g->add_option("--prompt-tokens", gen->prompt_tokens, "prompt length in tokens (0: a short text)");
  g->add_option("--batch", gen->batch, "prompts decoded together");
  g->add_option("--new-tokens", gen->new_tokens, "tokens per row");
  g->add_option("--threads", gen->threads, "LibTorch threads (0: all cores)");
  g->add_option("--repeats", gen->repeats, "timed repetitions");
  g->callback([gen] { run_bench_generate(*gen); });

  auto tok = std::make_shared<BenchTokenize>();
  auto* t = bench->add_subcommand("tokenize", "Tokenizer throughput (MB/s) on a JSONL(.gz) preference file");
  t->add_option("--tokenizer", tok->tokenizer, "model directory, tokenizer.json or .model file");
  t->add_option("--data", tok->data, "preference JSONL(.gz) whose chosen/rejected texts are encoded");
  t->add_option("--threads", tok->threads, "encoding threads");
  t->callback([tok] { bench_tokenize(resolve_model_path(tok->tokenizer), tok->data, tok->threads); });

  auto rm = std::make_shared<BenchTrainRm>();
  auto* r = bench->add_subcommand("train-rm",
                                  "Reward-model training throughput; run under mpirun for several ranks");
  r->add_option("--model", rm->model_dir, "backbone model directory");
  r->add_option("--random-config", rm->random_config,
                "config.json of a randomly initialised backbone to time");
  r->add_option("--device", rm->device, "auto | cpu | cuda");
  r->add_option("--pairs", rm->pairs_per_rank, "preference pairs per rank per step");
  r->add_option("--tokens", rm->tokens, "tokens per sequence");
  r->add_option("--steps", rm->steps, "optimizer steps");
  r->add_option("--method", rm->method, "loss (grm = BT + SFT regularizer)");
  r->add_flag("--gradient-checkpointing", rm->gradient_checkpointing, "recompute each layer in backward");
  r->add_option("--logprob-chunk", rm->logprob_chunk,
                "regularizer log-probs in vocabulary chunks of this many rows above it (default 8192)");
  r->add_flag("--lora", rm->lora, "LoRA adapters on a frozen backbone");
  r->add_option("--shard", rm->shard, "none | optimizer | gradients (ZeRO 1 / 2 over the ranks)");
  r->callback([rm] { run_bench_train_rm(*rm); });

  auto bon = std::make_shared<BenchBon>();
  auto* bn = bench->add_subcommand("bon", "Best-of-N sampling and scoring throughput");
  bn->add_option("--model", bon->model_dir, "policy model directory");
  bn->add_option("--n", bon->n, "samples per prompt");
  bn->add_option("--prompts", bon->prompts, "prompts");
  bn->add_option("--new-tokens", bon->new_tokens, "tokens per sample at most");
  bn->callback([bon] { run_bench_bon(*bon); });

  auto serve = std::make_shared<BenchServe>();
  auto* sv = bench->add_subcommand("serve", "Load test of `grm serve` on loopback (a real reward model)");
  sv->add_option("--model", serve->model_dir, "backbone of the served reward model");
  sv->add_option("--requests", serve->requests, "requests in all");
  sv->add_option("--concurrency", serve->concurrency, "requests in flight");
  sv->add_option("--texts", serve->texts_per_request, "texts per request");
  sv->callback([serve] { run_bench_serve(*serve); });
}

}  // namespace grm
