#include "policy/tokenizer/sentencepiece_processor.hpp"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <mutex>

#include "core/error.hpp"

namespace grm {
namespace {

// The shim's entry points, resolved once per process.
struct ShimApi {
  void* (*load)(const char*, char**);
  void (*free_processor)(void*);
  void (*free_buffer)(void*);
  int (*encode)(void*, const char*, size_t, int**, size_t*, char**);
  char* (*decode)(void*, const int*, size_t, char**);
  int (*vocab_size)(void*);
  char* (*id_to_piece)(void*, int);
  int (*piece_to_id)(void*, const char*);
  int (*special_id)(void*, int);
  int (*is_control)(void*, int);
  int (*is_unknown)(void*, int);
};

std::string shim_path() {
  if (const char* env = std::getenv("GRM_SENTENCEPIECE_SHIM"); env && *env) return env;
  std::error_code error;
  auto exe = std::filesystem::read_symlink("/proc/self/exe", error);
  if (!error) {
    for (auto dir : {exe.parent_path(), exe.parent_path().parent_path()}) {
      auto candidate = dir / "libgrm_sentencepiece.so";
      if (std::filesystem::exists(candidate)) return candidate.string();
    }
  }
  return GRM_SENTENCEPIECE_SHIM;
}

const ShimApi& shim() {
  static ShimApi api;
  static std::once_flag once;
  static std::string failure;
  std::call_once(once, [] {
    std::string path = shim_path();
    void* library = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    if (!library) {
      failure =
          fmt::format("cannot load the SentencePiece shim {} ({}); rebuild grm or set GRM_SENTENCEPIECE_SHIM",
                      path, ::dlerror());
      return;
    }
    auto bind = [&](auto& function, const char* name) {
      function = reinterpret_cast<std::remove_reference_t<decltype(function)>>(::dlsym(library, name));
      if (!function && failure.empty()) failure = fmt::format("{}: missing symbol {}", path, name);
    };
    bind(api.load, "grm_spm_load");
    bind(api.free_processor, "grm_spm_free");
    bind(api.free_buffer, "grm_spm_free_buffer");
    bind(api.encode, "grm_spm_encode");
    bind(api.decode, "grm_spm_decode");
    bind(api.vocab_size, "grm_spm_vocab_size");
    bind(api.id_to_piece, "grm_spm_id_to_piece");
    bind(api.piece_to_id, "grm_spm_piece_to_id");
    bind(api.special_id, "grm_spm_special_id");
    bind(api.is_control, "grm_spm_is_control");
    bind(api.is_unknown, "grm_spm_is_unknown");
  });
  if (!failure.empty()) throw Error(failure);
  return api;
}

// Takes ownership of a malloc'd C string from the shim.
std::string take(char* text) {
  std::string out = text ? text : "";
  shim().free_buffer(text);
  return out;
}

}  // namespace

SentencePieceProcessor::SentencePieceProcessor(const std::string& model_file) : file_(model_file) {
  char* error = nullptr;
  handle_ = shim().load(model_file.c_str(), &error);
  if (!handle_) fail("{}: not a loadable SentencePiece model ({})", model_file, take(error));
}

SentencePieceProcessor::~SentencePieceProcessor() {
  if (handle_) shim().free_processor(handle_);
}

std::vector<int> SentencePieceProcessor::encode(std::string_view text) const {
  int* ids = nullptr;
  size_t n_ids = 0;
  char* error = nullptr;
  if (shim().encode(handle_, text.data(), text.size(), &ids, &n_ids, &error) != 0)
    fail("{}: SentencePiece could not encode a {}-byte text ({})", file_, text.size(), take(error));
  std::vector<int> out(ids, ids + n_ids);
  shim().free_buffer(ids);
  return out;
}

std::string SentencePieceProcessor::decode(const std::vector<int>& ids) const {
  char* error = nullptr;
  char* text = shim().decode(handle_, ids.data(), ids.size(), &error);
  if (!text) fail("{}: SentencePiece could not decode {} ids ({})", file_, ids.size(), take(error));
  return take(text);
}

int SentencePieceProcessor::vocab_size() const {
  return shim().vocab_size(handle_);
}
std::string SentencePieceProcessor::id_to_piece(int id) const {
  return take(shim().id_to_piece(handle_, id));
}
int SentencePieceProcessor::piece_to_id(std::string_view piece) const {
  return shim().piece_to_id(handle_, std::string(piece).c_str());
}
bool SentencePieceProcessor::is_control(int id) const {
  return shim().is_control(handle_, id) != 0;
}
bool SentencePieceProcessor::is_unknown(int id) const {
  return shim().is_unknown(handle_, id) != 0;
}
int SentencePieceProcessor::bos_id() const {
  return shim().special_id(handle_, 0);
}
int SentencePieceProcessor::eos_id() const {
  return shim().special_id(handle_, 1);
}
int SentencePieceProcessor::pad_id() const {
  return shim().special_id(handle_, 2);
}
int SentencePieceProcessor::unk_id() const {
  return shim().special_id(handle_, 3);
}

}  // namespace grm
