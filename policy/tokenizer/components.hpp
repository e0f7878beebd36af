// The steps of a tokenizer.json pipeline, private to policy/tokenizer/json_tokenizer.cpp: normalizers,
// pre-tokenizers, decoders and post-processors as HF tokenizers defines them, each built from its JSON node
// by a factory that names the file, the key and the type on error. Only what ids need is kept: no offsets.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.hpp"

namespace grm::hf {

using json = nlohmann::json;

// A position in the parsed file, for error messages that name the file and the key at fault.
struct Node {
  const json& value;
  const std::string& file;
  std::string path;

  template <typename... Args>
  [[noreturn]] void error(fmt::format_string<Args...> format, Args&&... args) const {
    fail("{}: {}: {}", file, path.empty() ? "top level" : path,
         fmt::format(format, std::forward<Args>(args)...));
  }
  std::string child_path(std::string_view key) const {
    return path.empty() ? std::string(key) : path + "." + std::string(key);
  }
  bool has(const char* key) const {
    return value.is_object() && value.contains(key) && !value[key].is_null();
  }
  Node child(const char* key) const {
    if (!value.is_object()) error("expected a JSON object");
    if (!has(key)) error("missing key \"{}\"", key);
    return {value[key], file, child_path(key)};
  }
  Node array_child(const char* key) const {
    Node node = child(key);
    if (!node.value.is_array()) node.error("expected an array");
    return node;
  }
  Node at(size_t index) const { return {value[index], file, fmt::format("{}[{}]", path, index)}; }
  std::string string(const char* key) const {
    Node node = child(key);
    if (!node.value.is_string()) node.error("expected a string");
    return node.value.get<std::string>();
  }
  std::string string_or(const char* key, const std::string& fallback) const {
    return has(key) ? string(key) : fallback;
  }
  bool boolean_or(const char* key, bool fallback) const {
    if (!has(key)) return fallback;
    Node node = child(key);
    if (!node.value.is_boolean()) node.error("expected true or false");
    return node.value.get<bool>();
  }
  int64_t integer(const char* key) const {
    Node node = child(key);
    if (!node.value.is_number_integer()) node.error("expected an integer");
    return node.value.get<int64_t>();
  }
  std::string type() const { return string("type"); }
};

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual std::string normalize(std::string text) const = 0;
};
// Sequence, Prepend, Replace, NFC, NFD, Lowercase, Strip.
std::unique_ptr<Normalizer> make_normalizer(const Node& node);

struct Word {
  std::string text;
  bool at_start;  // begins at offset 0 of the original text (Metaspace's prepend_scheme "first")
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  virtual void split(std::vector<Word>& words) const = 0;  // replaces each word by its parts
};
// ByteLevel, Split, Metaspace, Sequence.
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const Node& node);

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;  // HF's Decoder::decode_chain
};
// ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, Sequence.
std::unique_ptr<Decoder> make_decoder(const Node& node);

// For a single sequence every supported post-processor reduces to special ids before and after it.
struct SpecialFrame {
  std::vector<int64_t> prefix, suffix;
};
// TemplateProcessing, ByteLevel, RobertaProcessing, BertProcessing, Sequence; wraps `frame` in its ids.
void add_post_processor(const Node& node, SpecialFrame& frame);

}  // namespace grm::hf
