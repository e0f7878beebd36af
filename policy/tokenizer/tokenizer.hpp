// Tokenizers that give the same ids as the reference libraries: Hugging Face `tokenizer.json` files (BPE
// with its normalizers, pre-tokenizers, added tokens, post-processor and decoders, as HF tokenizers 0.23
// runs them) and SentencePiece `.model` files (through libsentencepiece itself), behind one interface.
// The private parts: tokenizer_json.cpp (the tokenizer.json pipeline and added tokens),
// tokenizer_components (normalizers, pre-tokenizers, decoders, post-processors), tokenizer_bpe (the BPE
// model), tokenizer_spm.cpp, tokenizer_regex (PCRE2), tokenizer_unicode (UTF-8, NFC). No LibTorch here.
//
// Text that is not valid UTF-8 is first decoded with replacement (each maximal ill-formed subsequence
// becomes U+FFFD, as Python's bytes.decode("utf-8", "replace") does), so what is tokenized is what a Python
// caller holding those bytes would have passed to the reference library.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace grm {

class BpeCache;

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // add_special_tokens: apply the post-processor (e.g. BOS), as HF tokenizers' encode() does by default.
  virtual std::vector<int64_t> encode(std::string_view text, bool add_special_tokens = true) const = 0;
  // skip_special_tokens drops special tokens as the reference library does (see tokenizer_json.cpp for
  // tokenizer.json's rule on normalized special tokens).
  virtual std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens = true) const = 0;
  virtual std::string id_to_piece(
      int64_t id) const = 0;  // throws grm::Error for an id outside the vocabulary
  virtual std::optional<int64_t> piece_to_id(std::string_view piece) const = 0;
  virtual int64_t vocab_size() const = 0;  // 1 + the largest id, added tokens included

  // From tokenizer_config.json / special_tokens_map.json / config.json beside the tokenizer file, or the
  // SentencePiece model, where found.
  std::optional<int64_t> bos_id, eos_id, pad_id;
  // When set, replace the file's choice (post-processor, or add_bos_token / add_eos_token for
  // SentencePiece) of whether encode(text, true) starts with bos_id / ends with eos_id.
  std::optional<bool> add_bos, add_eos;

  // Encodes many texts on n_threads threads, each with its own pre-token -> ids cache; the same result
  // as calling encode() on each.
  std::vector<std::vector<int64_t>> encode_batch(const std::vector<std::string>& texts,
                                                 bool add_special_tokens = true, int n_threads = 2) const;

 protected:
  // encode() with a per-thread cache; tokenizers without one ignore it.
  virtual std::vector<int64_t> encode_cached(std::string_view text, bool add_special_tokens,
                                             BpeCache* /*cache*/) const {
    return encode(text, add_special_tokens);
  }
  // The special ids encode(text, true) puts around the text (prefix, suffix) after the add_bos / add_eos
  // overrides; `file_prefix` / `file_suffix` are what the file itself asks for.
  void apply_overrides(std::vector<int64_t>& file_prefix, std::vector<int64_t>& file_suffix) const;
};

// path: a model directory (tokenizer.json preferred, else tokenizer.model, else GPT-2's vocab.json +
// merges.txt or encoder.json + vocab.bpe), a tokenizer.json or a SentencePiece .model file. Throws
// grm::Error naming the file, the key at fault and what to do.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path);

}  // namespace grm
