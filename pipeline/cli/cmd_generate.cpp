#include <CLI/CLI.hpp>

#include "cluster/comm.hpp"
#include "core/log.hpp"
#include "pipeline/cli/commands.hpp"
#include "policy/chat_format.hpp"
#include "policy/generate.hpp"
#include "policy/model_path.hpp"
#include "policy/tokenizer/tokenizer.hpp"
#include "rm/train_state.hpp"

namespace grm {
namespace {

struct GenerateCommand {
  std::string model_dir;
  std::vector<std::string> prompts;
  int64_t n = 1;
  int64_t max_new_tokens = 64;
  SamplingOptions sampling;
  uint64_t seed = 0;
  std::string device = "auto";
  std::string chat_template = "auto";
};

void run_generate(const GenerateCommand& cmd) {
  set_compute_threads(1);
  std::string dir = resolve_model_path(cmd.model_dir);
  auto model = load_causal_lm(dir);
  model->to(training_device(cmd.device));
  auto tokenizer = load_tokenizer(dir);
  // A chat model gets each prompt as a user turn with its generation header and stops at its end of turn.
  ChatFormat format = ChatFormat::resolve({cmd.chat_template, "auto"}, dir, *tokenizer, "--chat-template");
  std::vector<std::vector<int64_t>> prompts;
  std::vector<std::string> shown;  // the text each continuation follows
  for (const auto& text : cmd.prompts) {
    ChatText rendered = format.render_prompt(text);
    for (int64_t i = 0; i < cmd.n; ++i)
      prompts.push_back(tokenizer->encode(rendered.prompt, rendered.add_special_tokens)),
          shown.push_back(rendered.prompt);
  }
  GenerateOptions options = generate_options_for(model->config(), *tokenizer);
  options.eos_ids = end_of_turn_ids(format, *tokenizer, options.eos_ids);
  options.max_new_tokens = cmd.max_new_tokens;
  options.sampling = cmd.sampling;
  options.seed = cmd.seed;
  auto out = generate(model, prompts, options);
  for (size_t i = 0; i < prompts.size(); ++i) {
    // With the tokenizer's own spacing at the seam: "They saw" + "▁a" prints "They saw a".
    std::string text = decode_continuation(*tokenizer, prompts[i], out.tokens[i], options.eos_ids);
    std::printf("[%zu] %s%s\n", i, shown[i].c_str(), text.c_str());
  }
}

}  // namespace

void add_generate_command(CLI::App& app) {
  auto cmd = std::make_shared<GenerateCommand>();
  auto* sub =
      app.add_subcommand("generate", "Sample continuations from a causal LM (Hugging Face directory)");
  sub->add_option("--model", cmd->model_dir, "model directory (config.json, safetensors, tokenizer)")
      ->required();
  sub->add_option("--prompt", cmd->prompts, "prompt text (repeatable)")->required();
  sub->add_option("--n", cmd->n, "samples per prompt");
  sub->add_option("--max-new-tokens", cmd->max_new_tokens, "tokens to generate at most");
  sub->add_option("--temperature", cmd->sampling.temperature, "sampling temperature; 0 = greedy");
  sub->add_option("--top-k", cmd->sampling.top_k, "keep the k most likely tokens; 0 = off");
  sub->add_option("--top-p", cmd->sampling.top_p, "nucleus sampling mass; 1 = off");
  sub->add_option("--seed", cmd->seed, "random seed; the same seed reproduces the samples");
  sub->add_option(
      "--chat-template", cmd->chat_template,
      "auto (the model's own, if any) | none | plain | chatml | llama3 | gemma | mistral | F.jinja");
  sub->add_option("--device", cmd->device, "auto (a GPU when there is one) | cpu | cuda")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  sub->callback([cmd] { run_generate(*cmd); });
}

}  // namespace grm
