// A C interface over libsentencepiece, built as its own shared object and loaded with
// dlopen(RTLD_LOCAL | RTLD_DEEPBIND) by policy/sentencepiece_model.cpp. Why: Debian's libsentencepiece
// carries its own copy of protobuf-lite and exports it; linked directly into a process that also loads
// LibTorch's libprotobuf, its symbols interpose on libprotobuf's and the process crashes during static
// initialisation. Loaded deep-bound and local, each library keeps its own protobuf.
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <sentencepiece_processor.h>

namespace {
char* copy_string(const std::string& s) {
  char* out = static_cast<char*>(std::malloc(s.size() + 1));
  if (out) std::memcpy(out, s.c_str(), s.size() + 1);
  return out;
}
}  // namespace

extern "C" {

// Returns a processor, or null with a malloc'd message in *error.
void* grm_spm_load(const char* path, char** error) {
  auto* processor = new sentencepiece::SentencePieceProcessor();
  auto status = processor->Load(path);
  if (!status.ok()) {
    *error = copy_string(status.ToString());
    delete processor;
    return nullptr;
  }
  return processor;
}

void grm_spm_free(void* processor) {
  delete static_cast<sentencepiece::SentencePieceProcessor*>(processor);
}
void grm_spm_free_buffer(void* buffer) {
  std::free(buffer);
}

// Encodes text into a malloc'd id array; returns 0 on success, else sets *error.
int grm_spm_encode(void* processor, const char* text, size_t length, int** ids, size_t* n_ids, char** error) {
  std::vector<int> out;
  auto status =
      static_cast<sentencepiece::SentencePieceProcessor*>(processor)->Encode(std::string(text, length), &out);
  if (!status.ok()) {
    *error = copy_string(status.ToString());
    return 1;
  }
  *ids = static_cast<int*>(std::malloc(sizeof(int) * (out.empty() ? 1 : out.size())));
  if (!out.empty()) std::memcpy(*ids, out.data(), sizeof(int) * out.size());
  *n_ids = out.size();
  return 0;
}

char* grm_spm_decode(void* processor, const int* ids, size_t n_ids, char** error) {
  std::string text;
  auto status = static_cast<sentencepiece::SentencePieceProcessor*>(processor)->Decode(
      std::vector<int>(ids, ids + n_ids), &text);
  if (!status.ok()) {
    *error = copy_string(status.ToString());
    return nullptr;
  }
  return copy_string(text);
}

int grm_spm_vocab_size(void* processor) {
  return static_cast<sentencepiece::SentencePieceProcessor*>(processor)->GetPieceSize();
}

char* grm_spm_id_to_piece(void* processor, int id) {
  return copy_string(static_cast<sentencepiece::SentencePieceProcessor*>(processor)->IdToPiece(id));
}

int grm_spm_piece_to_id(void* processor, const char* piece) {
  return static_cast<sentencepiece::SentencePieceProcessor*>(processor)->PieceToId(piece);
}

// Special ids: 0 bos, 1 eos, 2 pad, 3 unk; -1 when the model has none.
int grm_spm_special_id(void* processor, int which) {
  auto* p = static_cast<sentencepiece::SentencePieceProcessor*>(processor);
  switch (which) {
    case 0:
      return p->bos_id();
    case 1:
      return p->eos_id();
    case 2:
      return p->pad_id();
    default:
      return p->unk_id();
  }
}

int grm_spm_is_control(void* processor, int id) {
  return static_cast<sentencepiece::SentencePieceProcessor*>(processor)->IsControl(id) ? 1 : 0;
}

int grm_spm_is_unknown(void* processor, int id) {
  return static_cast<sentencepiece::SentencePieceProcessor*>(processor)->IsUnknown(id) ? 1 : 0;
}

}  // extern "C"
