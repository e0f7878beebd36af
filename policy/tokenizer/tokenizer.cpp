// load_tokenizer's choice of file, the special-token ids from the files beside it, and batch encoding.
#include "policy/tokenizer/tokenizer.hpp"

#include <atomic>
#include <exception>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include "core/error.hpp"
#include "policy/tokenizer/bpe.hpp"
#include "policy/tokenizer/loaders.hpp"

namespace grm {
namespace fs = std::filesystem;

namespace {

// A special token as tokenizer_config.json and special_tokens_map.json write it: "<s>" or {"content": "<s>"}.
std::optional<std::string> token_text(const nlohmann::json& config, const char* key) {
  if (!config.is_object() || !config.contains(key)) return std::nullopt;
  const auto& value = config[key];
  if (value.is_string()) return value.get<std::string>();
  if (value.is_object() && value.contains("content") && value["content"].is_string())
    return value["content"].get<std::string>();
  return std::nullopt;
}

// bos / eos / pad: tokenizer_config.json, then special_tokens_map.json (as token texts), then config.json
// and generation_config.json (as ids); whatever the tokenizer itself provided stays when none has one.
void read_special_ids(Tokenizer& tokenizer, const fs::path& dir) {
  std::vector<nlohmann::json> text_sources, id_sources;
  for (const char* name : {"tokenizer_config.json", "special_tokens_map.json"})
    if (auto json = read_json_file_if_exists((dir / name).string())) text_sources.push_back(std::move(*json));
  for (const char* name : {"generation_config.json", "config.json"})
    if (auto json = read_json_file_if_exists((dir / name).string())) id_sources.push_back(std::move(*json));
  auto resolve = [&](std::optional<int64_t>& slot, const char* token_key, const char* id_key) {
    for (const auto& source : text_sources) {
      if (auto text = token_text(source, token_key)) {
        if (auto id = tokenizer.piece_to_id(*text)) {
          slot = id;
          return;
        }
      }
    }
    if (slot) return;
    for (const auto& source : id_sources) {
      if (!source.is_object() || !source.contains(id_key)) continue;
      const auto& value = source[id_key];
      // eos_token_id may be a list (several stop tokens); the first is the one to append.
      const auto& id = value.is_array() && !value.empty() ? value[0] : value;
      if (id.is_number_integer()) {
        slot = id.get<int64_t>();
        return;
      }
    }
  };
  resolve(tokenizer.bos_id, "bos_token", "bos_token_id");
  resolve(tokenizer.eos_id, "eos_token", "eos_token_id");
  resolve(tokenizer.pad_id, "pad_token", "pad_token_id");
}

}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path) {
  fs::path file = path;
  if (!fs::exists(file))
    fail("{}: no such file or directory; pass a model directory or a tokenizer file", path);
  std::unique_ptr<Tokenizer> tokenizer;
  if (fs::is_directory(file)) {
    if (fs::exists(file / "tokenizer.json")) {
      file /= "tokenizer.json";
    } else if (fs::exists(file / "tokenizer.model")) {
      file /= "tokenizer.model";
    } else {
      for (auto [vocab, merges] :
           {std::pair{"vocab.json", "merges.txt"}, std::pair{"encoder.json", "vocab.bpe"}}) {
        if (fs::exists(file / vocab) && fs::exists(file / merges)) {
          tokenizer = load_vocab_merges_tokenizer((file / vocab).string(), (file / merges).string());
          read_special_ids(*tokenizer, file);
          return tokenizer;
        }
      }
      fail(
          "{}: has no tokenizer.json, tokenizer.model, vocab.json + merges.txt or encoder.json + vocab.bpe; "
          "point at the model's tokenizer files (for a model saved without them: --tokenizer DIR|FILE, or "
          "tokenizer: beside model: in a config)",
          path);
    }
  }
  fs::path dir = file.parent_path();
  if (file.extension() == ".json") {
    tokenizer = load_json_tokenizer(file.string());
  } else if (file.extension() == ".model") {
    auto config = read_json_file_if_exists((dir / "tokenizer_config.json").string());
    tokenizer = load_sentencepiece_tokenizer(file.string(), config ? &*config : nullptr);
  } else {
    fail("{}: unknown tokenizer file type; expected tokenizer.json (HF tokenizers) or a SentencePiece .model",
         path);
  }
  read_special_ids(*tokenizer, dir);
  return tokenizer;
}

void Tokenizer::apply_overrides(std::vector<int64_t>& prefix, std::vector<int64_t>& suffix) const {
  auto apply = [](const std::optional<bool>& add, const std::optional<int64_t>& id, const char* name,
                  std::vector<int64_t>& ids) {
    if (!add) return;
    if (*add && !id) fail("tokenizer: add_{} is set but no {} token is known; set {}_id", name, name, name);
    ids.clear();
    if (*add) ids.push_back(*id);
  };
  apply(add_bos, bos_id, "bos", prefix);
  apply(add_eos, eos_id, "eos", suffix);
}

std::vector<std::vector<int64_t>> Tokenizer::encode_batch(const std::vector<std::string>& texts,
                                                          bool add_special_tokens, int n_threads) const {
  std::vector<std::vector<int64_t>> out(texts.size());
  // Texts are handed out in small chunks from a shared counter so long and short texts balance out.
  constexpr size_t kChunk = 16;
  std::atomic<size_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto work = [&] {
    BpeCache cache;
    try {
      for (size_t begin = next.fetch_add(kChunk); begin < texts.size(); begin = next.fetch_add(kChunk))
        for (size_t i = begin; i < std::min(begin + kChunk, texts.size()); ++i)
          out[i] = encode_cached(texts[i], add_special_tokens, &cache);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
      next = texts.size();  // the other threads stop at their next chunk
    }
  };
  size_t n_workers = std::max<size_t>(
      1, std::min<size_t>(size_t(std::max(n_threads, 1)), (texts.size() + kChunk - 1) / kChunk));
  std::vector<std::thread> threads;
  for (size_t t = 1; t < n_workers; ++t) threads.emplace_back(work);
  work();
  for (auto& thread : threads) thread.join();
  if (error) std::rethrow_exception(error);
  return out;
}

}  // namespace grm
