// The one logger: lines prefixed with time and (in multi-rank runs) the rank; info goes to the console
// from rank 0 only, warnings and errors from every rank. Metrics go to JSONL files, not here.
#pragma once

#include <string>

#include <fmt/format.h>

namespace grm::log {

void set_rank(int rank, int world_size);
void write(const char* level, const std::string& message, bool all_ranks);

template <typename... Args>
void info(fmt::format_string<Args...> format, Args&&... args) {
  write("info", fmt::format(format, std::forward<Args>(args)...), false);
}
template <typename... Args>
void warn(fmt::format_string<Args...> format, Args&&... args) {
  write("warn", fmt::format(format, std::forward<Args>(args)...), true);
}
template <typename... Args>
void error(fmt::format_string<Args...> format, Args&&... args) {
  write("error", fmt::format(format, std::forward<Args>(args)...), true);
}

}  // namespace grm::log
