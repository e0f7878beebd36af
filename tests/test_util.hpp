// What every test suite shares: where reference material is ($GRM_SHARED, else ../shared beside the
// source root; a missing fixture is a failure, never a skip), a fresh temporary directory per test, and the
// message of an expected grm::Error.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <utility>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "core/error.hpp"

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

// A fresh, empty directory for one test: $TMPDIR/grm_test_NAME_PID (ctest runs each test in its own
// process, so the pid keeps parallel tests apart); whatever a killed earlier run left there is removed.
inline std::filesystem::path temp_dir(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / ("grm_test_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// The message of the grm::Error that `action` throws; the test fails if it throws nothing.
template <class F>
std::string error_of(F action) {
  try {
    action();
  } catch (const grm::Error& error) {
    return error.what();
  }
  ADD_FAILURE() << "expected grm::Error";
  return "";
}

// What `command` (a shell command line) prints on stdout, byte for byte (append 2>&1 for stderr too), and
// its exit status (-1 when a signal ended it).
inline std::pair<std::string, int> run_command(const std::string& command) {
  std::string out;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) return {"", -1};
  char buffer[4096];
  for (size_t n; (n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0;) out.append(buffer, n);
  int status = ::pclose(pipe);
  return {out, WIFEXITED(status) ? WEXITSTATUS(status) : -1};
}
