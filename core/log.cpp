#include "core/log.hpp"

#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>

namespace grm::log {
namespace {
int g_rank = 0;
int g_world_size = 1;
std::mutex g_mutex;
}  // namespace

void set_rank(int rank, int world_size) {
  g_rank = rank;
  g_world_size = world_size;
}

void write(const char* level, const std::string& message, bool all_ranks) {
  if (!all_ranks && g_rank != 0) return;
  std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm local{};
  localtime_r(&now, &local);
  char stamp[16];
  std::strftime(stamp, sizeof(stamp), "%H:%M:%S", &local);
  std::string rank = g_world_size > 1 ? fmt::format(" [rank {}]", g_rank) : "";
  std::lock_guard<std::mutex> lock(g_mutex);
  std::FILE* stream = std::string(level) == "info" ? stdout : stderr;
  std::fprintf(stream, "%s%s %s: %s\n", stamp, rank.c_str(), level, message.c_str());
  std::fflush(stream);
}

}  // namespace grm::log
