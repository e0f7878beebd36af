// Reward-model subcommands: train-rm, eval-rm, score, serve.
#include <filesystem>
#include <fstream>

#include <CLI/CLI.hpp>

#include "cluster/comm.hpp"
#include "core/atomic_file.hpp"
#include "core/log.hpp"
#include "core/text_io.hpp"
#include "pipeline/cli/commands.hpp"
#include "pipeline/stage_args.hpp"
#include "rm/eval_rm.hpp"
#include "rm/preference_data.hpp"
#include "rm/scorer.hpp"
#include "rm/serve/server.hpp"
#include "rm/train_rm.hpp"

namespace grm {
namespace {

namespace fs = std::filesystem;

void run_train_rm(const StageArgs& args) {
  auto config = load_stage_config<TrainRmConfig>(args);
  train_reward_model(config, args.out, config_dir_of(args));
}

struct EvalCommand {
  StageArgs stage;
  std::string model;
  std::string tokenizer;
  std::string data;
  std::vector<std::string> map;  // field=value for DataConfig keys, e.g. prompt_field=question
  std::string benchmark = "none";
  std::string output;
  std::string chat_template;
};

void run_eval_rm(const EvalCommand& cmd) {
  EvalRmConfig config;
  if (!cmd.stage.config.empty() || cmd.data.empty()) {
    config = load_stage_config<EvalRmConfig>(cmd.stage);
  }
  if (!cmd.model.empty()) config.scorer.model = cmd.model;
  if (!cmd.tokenizer.empty()) config.scorer.tokenizer = cmd.tokenizer;
  if (!cmd.chat_template.empty()) config.scorer.chat_template = cmd.chat_template;
  if (!cmd.data.empty()) {
    YAML::Node data;
    data["path"] = cmd.data;
    for (const auto& assignment : cmd.map) apply_checked_override<DataConfig>(data, assignment);
    EvalSetConfig set;
    set.data = read_config<DataConfig>(data, "--map");
    set.benchmark = cmd.benchmark;
    config.sets["data"] = set;
  }
  set_compute_threads(default_thread_count(1));  // the pipeline's per-stage budget, via OMP_NUM_THREADS
  nlohmann::json result = evaluate_reward_model(config, config_dir_of(cmd.stage));
  std::string text = result.dump(2);
  std::string output = cmd.output;
  if (output.empty() && !cmd.stage.out.empty()) output = (fs::path(cmd.stage.out) / "eval.json").string();
  if (!output.empty()) write_file_atomic(output, text + "\n");
  std::printf("%s\n", text.c_str());
}

struct ScoreCommand {
  ScorerConfig scorer;
  std::string input, output, prompt_field = "prompt", response_field = "response";
};

void run_score(const ScoreCommand& cmd) {
  auto scorer = make_scorer(cmd.scorer);
  auto lines = read_lines(cmd.input);
  std::vector<nlohmann::json> records;
  std::vector<ScoreItem> items;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (lines[i].find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json record;
    try {
      record = nlohmann::json::parse(lines[i]);
    } catch (const nlohmann::json::exception& e) {
      fail("{}:{}: not valid JSON ({})", cmd.input, i + 1, e.what());
    }
    auto text = [&](const std::string& field, bool required) -> std::string {
      if (!record.contains(field)) {
        if (required)
          fail("{}:{}: missing field '{}' (choose it with --response-field)", cmd.input, i + 1, field);
        return "";
      }
      if (!record[field].is_string()) fail("{}:{}: field '{}' must be a string", cmd.input, i + 1, field);
      return record[field].get<std::string>();
    };
    // A record without a prompt holds text already laid out for the model (a templated conversation):
    // scored as it is, where a (prompt, response) pair gets the model's template.
    bool has_prompt = record.contains(cmd.prompt_field);
    items.push_back({text(cmd.prompt_field, false), text(cmd.response_field, true), true, !has_prompt});
    records.push_back(std::move(record));
  }
  auto rewards = scorer->score(items);
  std::string out;
  for (size_t i = 0; i < records.size(); ++i) {
    records[i]["reward"] = rewards[i];
    out += records[i].dump() + "\n";
  }
  if (cmd.output.empty())
    std::fwrite(out.data(), 1, out.size(), stdout);
  else
    write_file_atomic(cmd.output, out);
}

struct ServeCommand {
  std::string model;
  std::string tokenizer;  // instead of the model directory's
  ServerOptions options;
  std::string token_file;
  int64_t batch_size = 64;
  bool normalize = false;
  std::string chat_template;  // instead of the one the model's training recorded
};

void run_serve(const ServeCommand& cmd) {
  auto options = cmd.options;
  if (!cmd.token_file.empty()) {
    options.token = read_file(cmd.token_file);
    options.token.erase(options.token.find_last_not_of(" \r\n") + 1);
    if (options.token.empty()) fail("{}: the token file is empty", cmd.token_file);
  }
  auto scorer = make_model_scorer(cmd.model, std::max<int64_t>(cmd.batch_size, options.max_batch), "auto",
                                  cmd.tokenizer, cmd.normalize, {cmd.chat_template, ""});
  RewardServer server(options, [&](const std::vector<ScoreItem>& items) { return scorer->score(items); });
  server.start();
  log::info("serving {} on http://{}:{}/get_reward (max batch {}, max wait {} ms{})", cmd.model, options.host,
            server.port(), options.max_batch, options.max_wait_ms,
            options.token.empty() ? "" : ", bearer token");
  serve_until_signal(server);
}

void add_scorer_options(CLI::App* app, ScorerConfig& scorer) {
  app->add_option("--model", scorer.model, "reward model directory (or ensemble folder)");
  app->add_option("--tokenizer", scorer.tokenizer,
                  "tokenizer directory or file, for model directories saved without one");
  app->add_option("--url", scorer.url, "served reward model: http://host:port/get_reward");
  app->add_option("--token-file", scorer.token_file, "bearer token for --url");
  app->add_option("--oracle", scorer.oracle, "built-in programmatic scorer: story, or word:WORD[:MAX]");
  app->add_flag("--normalize", scorer.normalize,
                "with --model: (reward - mean) / std by the model's training statistics (config.json)");
  app->add_option(
      "--chat-template", scorer.chat_template,
      "with --model: read text with this template (auto | none | plain | chatml | llama3 | gemma | "
      "mistral | F.jinja) instead of the one its training recorded");
}

}  // namespace

void add_train_rm_command(CLI::App& app) {
  auto args = std::make_shared<StageArgs>();
  auto* sub =
      app.add_subcommand("train-rm", "Train a reward model (GRM or a baseline); data-parallel under mpirun");
  add_stage_options(sub, *args);
  sub->callback([args] { run_train_rm(*args); });
}

void add_eval_rm_command(CLI::App& app) {
  auto cmd = std::make_shared<EvalCommand>();
  auto* sub = app.add_subcommand("eval-rm", "Preference accuracy of a reward model, overall and per group");
  add_stage_options(sub, cmd->stage, false);
  sub->add_option("--model", cmd->model, "reward model directory");
  sub->add_option("--tokenizer", cmd->tokenizer, "tokenizer directory or file, for models saved without one");
  sub->add_option(
      "--chat-template", cmd->chat_template,
      "read text with this template (auto | none | a built-in family | F.jinja) instead of the one "
      "the model's training recorded");
  sub->add_option("--data", cmd->data, "preference JSONL(.gz)");
  sub->add_option("--map", cmd->map,
                  "data field mapping, e.g. --map format=transcript --map chosen_field=good");
  sub->add_option(
         "--benchmark", cmd->benchmark,
         "score --data as a benchmark: rewardbench (v1 sections) or rewardbench2 (best-of-4 records)")
      ->check(CLI::IsMember({"none", "rewardbench", "rewardbench2"}));
  sub->add_option("--output", cmd->output, "write the JSON result here");
  sub->callback([cmd] { run_eval_rm(*cmd); });
}

void add_score_command(CLI::App& app) {
  auto cmd = std::make_shared<ScoreCommand>();
  auto* sub = app.add_subcommand("score", "Rewards for a JSONL of {prompt, response} records");
  add_scorer_options(sub, cmd->scorer);
  sub->add_option("--input", cmd->input, "JSONL(.gz) records")->required();
  sub->add_option("--output", cmd->output, "JSONL with a 'reward' field added (default: stdout)");
  sub->add_option("--prompt-field", cmd->prompt_field, "field holding the prompt (optional in records)");
  sub->add_option("--response-field", cmd->response_field, "field holding the response");
  sub->callback([cmd] { run_score(*cmd); });
}

ServedRmCommand served_rm_command(const std::string& exe) {
  return [exe](const std::string& model_dir, int port, int64_t max_batch) {
    return std::vector<std::string>{exe,           "serve",
                                    "--model",     model_dir,
                                    "--port",      std::to_string(port),
                                    "--max-batch", std::to_string(max_batch)};
  };
}

void add_serve_command(CLI::App& app) {
  auto cmd = std::make_shared<ServeCommand>();
  auto* sub = app.add_subcommand("serve", "Serve a reward model over HTTP (OpenRLHF's /get_reward protocol)");
  sub->add_option("--model", cmd->model, "reward model directory")->required();
  sub->add_option("--tokenizer", cmd->tokenizer, "tokenizer directory or file, for models saved without one");
  sub->add_option("--host", cmd->options.host, "address to bind (loopback by default)");
  sub->add_option("--port", cmd->options.port, "port (0: any free port)")->check(CLI::Range(0, 65535));
  sub->add_option("--max-batch", cmd->options.max_batch, "largest batch handed to the model")
      ->check(CLI::PositiveNumber);
  sub->add_option("--max-wait-ms", cmd->options.max_wait_ms, "longest a request waits for a batch to fill")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--token-file", cmd->token_file, "require 'Authorization: Bearer <token>' with this token");
  // Checked on the text: a negative number would wrap to "no limit" in the size_t.
  sub->add_option("--max-body-bytes", cmd->options.max_body_bytes, "larger request bodies get 413")
      ->check(CLI::PositiveNumber);
  sub->add_option("--max-text-bytes", cmd->options.max_text_bytes,
                  "a request with a longer text (prompt + response) gets 413")
      ->check(CLI::PositiveNumber);
  sub->add_option(
      "--chat-template", cmd->chat_template,
      "template for raw prompt/response pairs (auto | none | a built-in family | F.jinja) instead of "
      "the one the model's training recorded; OpenRLHF's templated queries are scored as sent");
  sub->add_flag("--normalize", cmd->normalize,
                "serve (reward - mean) / std by the model's training statistics (config.json)");
  sub->callback([cmd] { run_serve(*cmd); });
}

}  // namespace grm
