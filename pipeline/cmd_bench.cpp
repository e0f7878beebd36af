// `grm bench ...`: speed measurements on this machine (never timed tests). Each prints what it measured,
// on what, and the number, so it can be quoted with the machine it ran on.
#include <chrono>
#include <thread>

#include <CLI/CLI.hpp>

#include "cluster/log.hpp"
#include "pipeline/commands.hpp"
#include "policy/generate.hpp"
#include "policy/model_path.hpp"
#include "policy/tokenizer.hpp"

namespace grm {
namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

struct BenchGenerate {
  std::string model_dir = "tinystories-656k";  // name or directory (policy/model_path.hpp)
  int64_t batch = 64;
  int64_t new_tokens = 128;
  int threads = 0;  // 0: all cores
  int repeats = 3;
};

void run_bench_generate(const BenchGenerate& b) {
  torch::set_num_threads(b.threads > 0 ? b.threads : int(std::max(1u, std::thread::hardware_concurrency())));
  std::string dir = resolve_model_path(b.model_dir);
  auto model = load_causal_lm(dir);
  auto tokenizer = load_tokenizer(dir);
  std::vector<std::vector<int64_t>> prompts(size_t(b.batch), tokenizer->encode("Once upon a time"));
  GenerateOptions options;
  options.max_new_tokens = b.new_tokens;
  options.batch_size = b.batch;  // one batch; no EOS so every row decodes all tokens
  generate(model, prompts, options);  // warm-up
  double best = 0;
  for (int r = 0; r < b.repeats; ++r) {
    options.seed = uint64_t(r);
    auto start = std::chrono::steady_clock::now();
    auto out = generate(model, prompts, options);
    double rate = double(out.generated_tokens) / seconds_since(start);
    best = std::max(best, rate);
    std::printf("generate: %s batch %lld x %lld new tokens, %d threads: %.0f tokens/s\n", dir.c_str(),
                (long long)b.batch, (long long)b.new_tokens, torch::get_num_threads(), rate);
  }
  std::printf("generate best: %.0f tokens/s\n", best);
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto* bench = app.add_subcommand("bench", "Benchmarks (generate, tokenize, train-rm, bon, serve)");
  bench->require_subcommand(1);
  auto gen = std::make_shared<BenchGenerate>();
  auto* g = bench->add_subcommand("generate", "KV-cache sampling throughput");
  g->add_option("--model", gen->model_dir, "model directory");
  g->add_option("--batch", gen->batch, "prompts decoded together");
  g->add_option("--new-tokens", gen->new_tokens, "tokens per row");
  g->add_option("--threads", gen->threads, "LibTorch threads (0: all cores)");
  g->add_option("--repeats", gen->repeats, "timed repetitions");
  g->callback([gen] { run_bench_generate(*gen); });
}

}  // namespace grm
