// Private to policy/tokenizer/: the concrete tokenizers' loaders.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "core/text_io.hpp"
#include "policy/tokenizer/tokenizer.hpp"

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

}  // namespace grm
