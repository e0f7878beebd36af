// Where the tests find reference material: $GRM_SHARED, else ../shared beside the source root.
// A missing fixture is a failure (the helpers throw), never a skip.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

#include "cluster/error.hpp"

inline std::string shared_root() {
  if (const char* env = std::getenv("GRM_SHARED"); env && *env) return env;
  return std::string(GRM_SOURCE_DIR) + "/../shared";
}

inline std::string shared_path(const std::string& relative) {
  std::string path = shared_root() + "/" + relative;
  if (!std::filesystem::exists(path))
    grm::fail("fixture missing: {} (set GRM_SHARED to the fixture root)", path);
  return path;
}
