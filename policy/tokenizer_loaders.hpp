// Private to policy/tokenizer*.cpp: the two concrete tokenizers' loaders and the JSON helpers they share.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "policy/tokenizer.hpp"

namespace grm {

// A tokenizer.json file (HF tokenizers format).
std::unique_ptr<Tokenizer> load_json_tokenizer(const std::string& file);
// GPT-2's original pair (vocab.json / encoder.json and merges.txt / vocab.bpe), read as HF's
// ByteLevelBPETokenizer reads it.
std::unique_ptr<Tokenizer> load_vocab_merges_tokenizer(const std::string& vocab_file,
                                                       const std::string& merges_file);
// A SentencePiece .model file; `config` is the tokenizer_config.json beside it, if any (add_bos_token, ...).
std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(const std::string& file,
                                                        const nlohmann::json* config);

// Parses a JSON file; throws grm::Error naming the file and the parser's position on malformed JSON.
nlohmann::json read_json_file(const std::string& file);
// The same, or nullopt when the file does not exist.
std::optional<nlohmann::json> read_json_file_if_exists(const std::string& file);

}  // namespace grm
