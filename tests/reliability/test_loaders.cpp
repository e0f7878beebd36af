// Loaders never wrap, crash or throw anything but grm::Error on hostile input: hand-made hostile
// safetensors headers, then a fixed-seed fuzz pass (byte flips, insertions, truncations) over a valid
// safetensors file, a tokenizer.json, a YAML config and a JSONL preference file.
#include <cstdint>
#include <filesystem>
#include <random>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/atomic_file.hpp"
#include "core/config.hpp"
#include "policy/safetensors.hpp"
#include "policy/tokenizer/tokenizer.hpp"
#include "rm/preference_data.hpp"
#include "rm/train_rm.hpp"
#include "tests/test_util.hpp"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// A safetensors file with this header and `data_bytes` bytes of data.
std::string safetensors_bytes(const json& header, size_t data_bytes) {
  std::string text = header.dump();
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[size_t(i)] = char((uint64_t(text.size()) >> (8 * i)) & 0xff);
  return out + text + std::string(data_bytes, '\0');
}

std::string load_error(const fs::path& path, const std::string& bytes) {
  grm::write_file_atomic(path.string(), bytes);
  return error_of([&] { grm::SafetensorsFile file(path.string()); });
}

TEST(Reliability, HostileSafetensorsHeadersAreRefusedNamingTheTensor) {
  auto dir = temp_dir("hostile_st");
  auto path = dir / "m.safetensors";
  // 2^40 * 2^40 * 4 bytes wraps to 0 in 64 bits: once accepted as "needs 0 bytes".
  std::string huge = load_error(
      path,
      safetensors_bytes(
          {{"w", {{"dtype", "F32"}, {"shape", {1ULL << 40, 1ULL << 40}}, {"data_offsets", {0, 0}}}}}, 0));
  EXPECT_NE(huge.find("tensor 'w' has shape [1099511627776,1099511627776] whose size overflows 64 bits"),
            std::string::npos)
      << huge;
  std::string overlap = load_error(
      path, safetensors_bytes({{"a", {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {0, 8}}}},
                               {"b", {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {4, 12}}}}},
                              12));
  EXPECT_NE(overlap.find("tensors 'a' (bytes 0-8) and 'b' (bytes 4-12) overlap"), std::string::npos)
      << overlap;
  std::string beyond = load_error(
      path, safetensors_bytes({{"a", {{"dtype", "F32"}, {"shape", {4}}, {"data_offsets", {0, 16}}}}}, 8));
  EXPECT_NE(beyond.find("tensor 'a' ends at byte 16 of a 8-byte data section"), std::string::npos) << beyond;
  // Adjacent tensors and empty ones are fine.
  grm::write_file_atomic(
      path.string(), safetensors_bytes({{"a", {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {0, 8}}}},
                                        {"e", {{"dtype", "F32"}, {"shape", {0}}, {"data_offsets", {8, 8}}}},
                                        {"b", {{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", {8, 12}}}}},
                                       12));
  EXPECT_EQ(grm::SafetensorsFile(path.string()).names().size(), 3u);
  fs::remove_all(dir);
}

// `bytes` changed at random: a few flipped bytes, a run inserted, or cut short.
std::string mutate(std::string bytes, std::mt19937_64& rng) {
  switch (rng() % 3) {
    case 0:
      for (int i = 0, n = 1 + int(rng() % 4); i < n && !bytes.empty(); ++i)
        bytes[rng() % bytes.size()] = char(rng() & 0xff);
      break;
    case 1:
      bytes.insert(bytes.empty() ? 0 : rng() % bytes.size(), std::string(1 + rng() % 8, char(rng() & 0xff)));
      break;
    default:
      bytes.resize(bytes.empty() ? 0 : rng() % bytes.size());
  }
  return bytes;
}

// Each mutated input either loads or fails with grm::Error; anything else (a crash, another exception
// type) fails the test, with the case number to reproduce it.
template <class Load>
void fuzz(const std::string& name, const std::string& original, int cases, Load load) {
  std::mt19937_64 rng(20261202);
  int errors = 0;
  for (int i = 0; i < cases; ++i) {
    std::string input = mutate(original, rng);
    try {
      load(input);
    } catch (const grm::Error&) {
      ++errors;
    } catch (const std::exception& e) {
      ADD_FAILURE() << name << " case " << i << ": " << typeid(e).name() << ": " << e.what();
    }
  }
  EXPECT_GT(errors, 0) << name << ": no mutation was refused, so the fuzzing reached nothing";
}

TEST(Reliability, FuzzedLoaderInputsLoadOrFailWithAMessage) {
  auto dir = temp_dir("fuzz");
  auto st_path = (dir / "m.safetensors").string();
  grm::save_safetensors(st_path, {{"w", torch::ones({3, 4})}, {"b", torch::zeros({4}, torch::kBFloat16)}});
  fuzz("safetensors", grm::read_file(st_path), 400, [&](const std::string& bytes) {
    grm::write_file_atomic(st_path, bytes);
    grm::SafetensorsFile file(st_path);
    for (const auto& name : file.names()) file.get(name);
  });

  auto tok_path = (dir / "tokenizer.json").string();
  std::string tokenizer = grm::read_file(shared_path("models/tinystories-656k/tokenizer.json"));
  fuzz("tokenizer.json", tokenizer, 60, [&](const std::string& bytes) {
    grm::write_file_atomic(tok_path, bytes);
    grm::load_tokenizer(tok_path)->encode("Once upon a time, there was a cat.");
  });

  std::string yaml = grm::dump_config(grm::TrainRmConfig());
  fuzz("train-rm YAML", yaml, 400, [&](const std::string& text) {
    grm::read_config<grm::TrainRmConfig>(grm::load_yaml_text(text, "fuzz.yaml"), "fuzz.yaml");
  });

  auto data_path = (dir / "pairs.jsonl").string();
  std::string pairs;
  for (int i = 0; i < 6; ++i)
    pairs += json({{"prompt", "p" + std::to_string(i)}, {"chosen", "c"}, {"rejected", "r"}, {"margin", 0.5}})
                 .dump() +
             "\n";
  fuzz("preference JSONL", pairs, 400, [&](const std::string& bytes) {
    grm::write_file_atomic(data_path, bytes);
    grm::DataConfig config;
    config.path = data_path;
    config.margin_field = "margin";
    grm::read_preferences(config);
  });
  fs::remove_all(dir);
}

}  // namespace
