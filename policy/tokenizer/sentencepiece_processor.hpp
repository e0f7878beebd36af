// SentencePieceProcessor: libsentencepiece behind a small C++ interface, reached through the
// grm_sentencepiece shim (policy/tokenizer/sentencepiece/shim.cpp) loaded with dlopen(RTLD_LOCAL |
// RTLD_DEEPBIND): Debian's libsentencepiece exports its own protobuf-lite, which crashes a process that also
// loads LibTorch's libprotobuf when both are linked normally. The shim is looked for at
// $GRM_SENTENCEPIECE_SHIM, next to the running executable, then where the build put it.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace grm {

class SentencePieceProcessor {
 public:
  explicit SentencePieceProcessor(const std::string& model_file);  // throws grm::Error naming the file
  ~SentencePieceProcessor();
  SentencePieceProcessor(const SentencePieceProcessor&) = delete;
  SentencePieceProcessor& operator=(const SentencePieceProcessor&) = delete;

  std::vector<int> encode(std::string_view text) const;
  std::string decode(const std::vector<int>& ids) const;
  int vocab_size() const;
  std::string id_to_piece(int id) const;
  int piece_to_id(std::string_view piece) const;  // the unknown id for pieces not in the vocabulary
  bool is_control(int id) const;
  bool is_unknown(int id) const;
  int bos_id() const;  // -1 when the model has none
  int eos_id() const;
  int pad_id() const;
  int unk_id() const;

 private:
  std::string file_;
  void* handle_ = nullptr;
};

}  // namespace grm
