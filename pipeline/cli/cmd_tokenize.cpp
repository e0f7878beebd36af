// `grm tokenize`: the ids and pieces a tokenizer gives a text, or the text it gives a list of ids.
#include <cstdio>
#include <memory>
#include <optional>
#include <sstream>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "pipeline/cli/commands.hpp"
#include "policy/tokenizer/tokenizer.hpp"

namespace grm {
namespace {

struct TokenizeCommand {
  std::string tokenizer_path;
  std::optional<std::string> text;
  std::string decode_ids;   // "1 2 3" or "1,2,3"
  bool no_special = false;  // encode without the post-processor's special tokens
};

// A piece as a JSON string literal, so spaces, newlines and byte-level characters stay visible.
std::string quoted(const std::string& piece) {
  return nlohmann::json(piece).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::vector<int64_t> parse_ids(std::string list) {
  for (char& c : list)
    if (c == ',' || c == '[' || c == ']') c = ' ';
  std::istringstream fields(list);
  std::vector<int64_t> ids;
  std::string field;
  while (fields >> field) {
    try {
      size_t used = 0;
      ids.push_back(std::stoll(field, &used));
      if (used != field.size()) throw std::invalid_argument(field);
    } catch (const std::exception&) {
      fail("--decode: \"{}\" is not an integer id; pass ids like \"1 2 3\"", field);
    }
  }
  return ids;
}

void run_tokenize(const TokenizeCommand& cmd) {
  if (!cmd.text && cmd.decode_ids.empty()) fail("tokenize: pass --text TEXT or --decode \"ID ID ...\"");
  auto tokenizer = load_tokenizer(cmd.tokenizer_path);
  if (cmd.text) {  // "" too: its ids are the special tokens alone
    std::vector<int64_t> ids = tokenizer->encode(*cmd.text, !cmd.no_special);
    std::string line;
    for (int64_t id : ids) line += (line.empty() ? "" : " ") + std::to_string(id);
    std::printf("ids (%zu): %s\n", ids.size(), line.c_str());
    for (int64_t id : ids)
      std::printf("%8lld  %s\n", (long long)id, quoted(tokenizer->id_to_piece(id)).c_str());
  }
  if (!cmd.decode_ids.empty()) {
    std::vector<int64_t> ids = parse_ids(cmd.decode_ids);
    std::printf("decoded: %s\n", quoted(tokenizer->decode(ids)).c_str());
  }
}

}  // namespace

void add_tokenize_command(CLI::App& app) {
  auto cmd = std::make_shared<TokenizeCommand>();
  auto* sub = app.add_subcommand("tokenize", "Ids and pieces of a text, or the text of ids (--decode)");
  sub->add_option("--tokenizer", cmd->tokenizer_path,
                  "model directory, tokenizer.json or SentencePiece .model")
      ->required();
  sub->add_option("--text", cmd->text, "text to encode");
  sub->add_option("--decode", cmd->decode_ids, "ids to decode, e.g. \"1 2 3\"");
  sub->add_flag("--no-special", cmd->no_special, "encode without special tokens (BOS/EOS)");
  sub->callback([cmd] { run_tokenize(*cmd); });
}

}  // namespace grm
