// safetensors reading and writing, the format Hugging Face checkpoints use: an 8-byte little-endian
// header length, a JSON header {name: {dtype, shape, data_offsets}}, then the raw tensor bytes.
// Reading memory-maps the file and checks every offset against its size, so a truncated or corrupted
// file is an error naming the file and tensor, never a crash. Writing lays tensors out exactly as the
// Python `safetensors` library does (sorted by dtype alignment, then name; header padded to 8 bytes),
// so a grm checkpoint loads in transformers unchanged and a load -> save round trip is byte-identical.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/torch.hpp"

namespace grm {

// A memory-mapped safetensors file; tensors view the mapping until copied.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  std::vector<std::string> names() const;
  bool contains(const std::string& name) const { return entries_.count(name) > 0; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // The tensor in its stored dtype, as an owned copy (safe after the file is closed).
  torch::Tensor get(const std::string& name) const;

 private:
  void parse_header();  // fills entries_ and metadata_ from the mapped file; throws grm::Error
  struct Entry {
    torch::ScalarType dtype;
    std::vector<int64_t> shape;
    size_t begin = 0, end = 0;  // byte offsets into the data section
  };
  std::string path_;
  void* mapping_ = nullptr;
  size_t file_size_ = 0;
  size_t data_offset_ = 0;
  std::map<std::string, Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

// All tensors of a checkpoint: `path` is a .safetensors file, or a directory holding model.safetensors
// or a sharded model.safetensors.index.json.
std::map<std::string, torch::Tensor> load_safetensors(const std::string& path);

// Writes tensors (contiguous CPU copies are made as needed) with {"format": "pt"} metadata by default.
void save_safetensors(const std::string& path, const std::map<std::string, torch::Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

// Splits into shards of at most max_shard_bytes plus model.safetensors.index.json, as transformers does;
// one shard is written as plain model.safetensors.
void save_safetensors_sharded(const std::string& directory,
                              const std::map<std::string, torch::Tensor>& tensors, size_t max_shard_bytes);

}  // namespace grm
