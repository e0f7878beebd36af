#include "policy/model_path.hpp"

#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <vector>

#include "core/atomic_file.hpp"
#include "core/error.hpp"

namespace grm {

namespace fs = std::filesystem;

std::string resolve_model_path(const std::string& name, const std::string& config_dir) {
  if (name.empty())
    fail("no model named: set the model field to a directory or a name like tinystories-656k");
  if (fs::exists(name)) return fs::absolute(name).lexically_normal().string();
  std::vector<fs::path> places;
  if (!config_dir.empty()) places.push_back(config_dir);
  if (const char* env = std::getenv("GRM_MODEL_PATH")) {
    std::stringstream paths(env);
    for (std::string dir; std::getline(paths, dir, ':');)
      if (!dir.empty()) places.push_back(dir);
  }
  if (const char* shared = std::getenv("GRM_SHARED"); shared && *shared)
    places.push_back(fs::path(shared) / "models");
  places.push_back(fs::current_path() / ".." / "shared" / "models");
  places.push_back(fs::path(GRM_SOURCE_ROOT) / ".." / "shared" / "models");
  std::string looked;
  for (const auto& dir : places) {
    auto candidate = dir / name;
    if (fs::exists(candidate / "config.json")) return fs::absolute(candidate).lexically_normal().string();
    looked += "\n  " + candidate.lexically_normal().string();
  }
  fail(
      "model '{}' not found; looked in:{}\n(download it, e.g. raincandy-u/TinyStories-656K from Hugging "
      "Face, "
      "and put its folder on GRM_MODEL_PATH)",
      name, looked);
}

void copy_tokenizer_files(const std::string& from_dir, const std::string& to_dir) {
  fs::create_directories(to_dir);
  for (const char* file : {"tokenizer.json", "tokenizer.model", "tokenizer_config.json",
                           "special_tokens_map.json", "generation_config.json", "vocab.json", "merges.txt"}) {
    auto from = fs::path(from_dir) / file;
    if (fs::exists(from)) copy_file_atomic(from.string(), (fs::path(to_dir) / file).string());
  }
}

}  // namespace grm
