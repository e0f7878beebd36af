#include "policy/safetensors.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <tuple>

#include <nlohmann/json.hpp>

#include "core/atomic_file.hpp"
#include "core/error.hpp"

namespace grm {
namespace {

namespace fs = std::filesystem;

struct DtypeName {
  const char* name;
  torch::ScalarType type;
};
constexpr DtypeName kDtypes[] = {
    {"F64", torch::kFloat64}, {"F32", torch::kFloat32}, {"F16", torch::kFloat16}, {"BF16", torch::kBFloat16},
    {"I64", torch::kInt64},   {"I32", torch::kInt32},   {"I16", torch::kInt16},   {"I8", torch::kInt8},
    {"U8", torch::kUInt8},    {"BOOL", torch::kBool},
};

torch::ScalarType dtype_from_name(const std::string& name, const std::string& path,
                                  const std::string& tensor) {
  for (const auto& d : kDtypes)
    if (name == d.name) return d.type;
  fail(
      "{}: tensor '{}' has dtype '{}', which grm does not read (F64, F32, F16, BF16, I64, I32, I16, I8, U8, "
      "BOOL)",
      path, tensor, name);
}

const char* dtype_name(torch::ScalarType type) {
  for (const auto& d : kDtypes)
    if (type == d.type) return d.name;
  fail("safetensors: cannot write tensors of dtype {}", c10::toString(type));
}

}  // namespace

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) fail("{}: cannot open ({})", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    fail("{}: cannot stat ({})", path, std::strerror(errno));
  }
  file_size_ = static_cast<size_t>(st.st_size);
  if (file_size_ < 8) {
    ::close(fd);
    fail("{}: file is {} bytes, too short for a safetensors header (truncated download?)", path, file_size_);
  }
  mapping_ = ::mmap(nullptr, file_size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (mapping_ == MAP_FAILED) {
    mapping_ = nullptr;
    fail("{}: cannot memory-map ({})", path, std::strerror(errno));
  }
  try {
    parse_header();
  } catch (...) {
    ::munmap(mapping_, file_size_);  // the destructor does not run for a constructor that throws
    mapping_ = nullptr;
    throw;
  }
}

void SafetensorsFile::parse_header() {
  const std::string& path = path_;
  const auto* bytes = static_cast<const unsigned char*>(mapping_);
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | bytes[i];
  if (header_size > file_size_ - 8)
    fail(
        "{}: header claims {} bytes but the file has only {} after the length (truncated or not a "
        "safetensors file)",
        path, header_size, file_size_ - 8);
  data_offset_ = 8 + header_size;
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(reinterpret_cast<const char*>(bytes) + 8,
                                   reinterpret_cast<const char*>(bytes) + data_offset_);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: the safetensors header is not valid JSON ({})", path, e.what());
  }
  if (!header.is_object()) fail("{}: the safetensors header must be a JSON object", path);
  size_t data_size = file_size_ - data_offset_;
  for (auto& [name, info] : header.items()) {
    if (name == "__metadata__") {
      if (!info.is_object()) fail("{}: __metadata__ must be an object of strings", path);
      for (auto& [key, value] : info.items())
        if (value.is_string()) metadata_[key] = value.get<std::string>();
      continue;
    }
    try {
      Entry entry;
      entry.dtype = dtype_from_name(info.at("dtype").get<std::string>(), path, name);
      entry.shape = info.at("shape").get<std::vector<int64_t>>();
      auto offsets = info.at("data_offsets").get<std::vector<size_t>>();
      if (offsets.size() != 2) fail("{}: tensor '{}': data_offsets must hold two numbers", path, name);
      entry.begin = offsets[0];
      entry.end = offsets[1];
      // Checked arithmetic: a hostile shape like [2^40, 2^40] must not wrap to a small byte count.
      uint64_t expected = c10::elementSize(entry.dtype);
      for (int64_t d : entry.shape) {
        if (d < 0) fail("{}: tensor '{}' has a negative dimension", path, name);
        if (__builtin_mul_overflow(expected, uint64_t(d), &expected) || expected > uint64_t(INT64_MAX))
          fail("{}: tensor '{}' has shape {} whose size overflows 64 bits", path, name,
               info.at("shape").dump());
      }
      if (entry.end < entry.begin || entry.end - entry.begin != expected)
        fail("{}: tensor '{}' spans {} bytes but its shape and dtype need {}", path, name,
             entry.end - entry.begin, expected);
      if (entry.end > data_size)
        fail("{}: tensor '{}' ends at byte {} of a {}-byte data section (file truncated?)", path, name,
             entry.end, data_size);
      entries_[name] = entry;
    } catch (const nlohmann::json::exception& e) {
      fail("{}: tensor '{}' has a malformed header entry ({})", path, name, e.what());
    }
  }
  // Tensors may not share bytes: overlapping data would alias two parameters.
  std::vector<std::pair<const std::string*, const Entry*>> by_offset;
  for (const auto& [name, entry] : entries_) by_offset.emplace_back(&name, &entry);
  std::sort(by_offset.begin(), by_offset.end(), [](const auto& a, const auto& b) {
    return std::tie(a.second->begin, a.second->end) < std::tie(b.second->begin, b.second->end);
  });
  for (size_t i = 1; i < by_offset.size(); ++i)
    if (by_offset[i].second->begin < by_offset[i - 1].second->end &&
        by_offset[i].second->end > by_offset[i].second->begin)
      fail("{}: tensors '{}' (bytes {}-{}) and '{}' (bytes {}-{}) overlap", path, *by_offset[i - 1].first,
           by_offset[i - 1].second->begin, by_offset[i - 1].second->end, *by_offset[i].first,
           by_offset[i].second->begin, by_offset[i].second->end);
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_) ::munmap(mapping_, file_size_);
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  for (const auto& [name, entry] : entries_) out.push_back(name);
  return out;
}

torch::Tensor SafetensorsFile::get(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) fail("{}: no tensor named '{}'", path_, name);
  const Entry& e = it->second;
  auto* data = static_cast<char*>(mapping_) + data_offset_ + e.begin;
  auto out = torch::empty(e.shape, torch::TensorOptions().dtype(e.dtype));
  std::memcpy(out.data_ptr(), data, e.end - e.begin);
  return out;
}

std::map<std::string, torch::Tensor> load_safetensors(const std::string& path) {
  std::map<std::string, torch::Tensor> tensors;
  auto read_file = [&](const std::string& file) {
    SafetensorsFile st(file);
    for (const auto& name : st.names()) tensors[name] = st.get(name);
  };
  if (!fs::is_directory(path)) {
    read_file(path);
    return tensors;
  }
  fs::path dir(path);
  if (fs::exists(dir / "model.safetensors")) {
    read_file((dir / "model.safetensors").string());
    return tensors;
  }
  fs::path index_path = dir / "model.safetensors.index.json";
  if (!fs::exists(index_path))
    fail("{}: no model.safetensors or model.safetensors.index.json (is this a Hugging Face model directory?)",
         path);
  nlohmann::json index;
  try {
    std::ifstream in(index_path);
    index = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON ({})", index_path.string(), e.what());
  }
  if (!index.contains("weight_map") || !index["weight_map"].is_object())
    fail("{}: missing the 'weight_map' object", index_path.string());
  std::map<std::string, std::vector<std::string>> by_shard;
  for (auto& [name, shard] : index["weight_map"].items()) {
    if (!shard.is_string()) fail("{}: weight_map['{}'] must be a file name", index_path.string(), name);
    by_shard[shard.get<std::string>()].push_back(name);
  }
  for (const auto& [shard, names] : by_shard) {
    SafetensorsFile st((dir / shard).string());
    for (const auto& name : names) {
      if (!st.contains(name))
        fail("{}: the index places tensor '{}' in this shard, but it is not there", st.path(), name);
      tensors[name] = st.get(name);
    }
  }
  return tensors;
}

namespace {

std::string serialize(const std::map<std::string, torch::Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  // The Python library orders tensors by dtype alignment (largest first), then by name.
  std::vector<std::pair<std::string, torch::Tensor>> order;
  for (const auto& [name, t] : tensors) order.emplace_back(name, t.detach().to(torch::kCPU).contiguous());
  std::stable_sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
    return a.second.element_size() > b.second.element_size();
  });
  std::string header = "{";
  if (!metadata.empty()) header += "\"__metadata__\":" + nlohmann::json(metadata).dump() + ",";
  size_t offset = 0;
  for (const auto& [name, t] : order) {
    size_t bytes = t.numel() * t.element_size();
    nlohmann::ordered_json entry = {{"dtype", dtype_name(t.scalar_type())},
                                    {"shape", t.sizes().vec()},
                                    {"data_offsets", {offset, offset + bytes}}};
    header += nlohmann::json(name).dump() + ":" + entry.dump() + ",";
    offset += bytes;
  }
  if (header.back() == ',') header.pop_back();
  header += "}";
  header.append((8 - header.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  out += header;
  out.reserve(out.size() + offset);
  for (const auto& [name, t] : order)
    out.append(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size());
  return out;
}

}  // namespace

void save_safetensors(const std::string& path, const std::map<std::string, torch::Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  write_file_atomic(path, serialize(tensors, metadata));
}

void save_safetensors_sharded(const std::string& directory,
                              const std::map<std::string, torch::Tensor>& tensors, size_t max_shard_bytes) {
  std::vector<std::map<std::string, torch::Tensor>> shards(1);
  size_t current = 0, total = 0;
  for (const auto& [name, t] : tensors) {
    size_t bytes = t.numel() * t.element_size();
    if (current > 0 && current + bytes > max_shard_bytes) {
      shards.emplace_back();
      current = 0;
    }
    shards.back()[name] = t;
    current += bytes;
    total += bytes;
  }
  fs::create_directories(directory);
  if (shards.size() == 1) {
    save_safetensors((fs::path(directory) / "model.safetensors").string(), tensors);
    return;
  }
  nlohmann::json weight_map = nlohmann::json::object();
  for (size_t i = 0; i < shards.size(); ++i) {
    std::string file = fmt::format("model-{:05d}-of-{:05d}.safetensors", i + 1, shards.size());
    save_safetensors((fs::path(directory) / file).string(), shards[i]);
    for (const auto& [name, t] : shards[i]) weight_map[name] = file;
  }
  nlohmann::json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  write_file_atomic((fs::path(directory) / "model.safetensors.index.json").string(), index.dump(2));
}

}  // namespace grm
