#include "core/text_io.hpp"

#include <zlib.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/atomic_file.hpp"
#include "core/error.hpp"

namespace grm {

std::vector<std::string> read_lines(const std::string& path) {
  gzFile file = gzopen(path.c_str(), "rb");  // reads plain files unchanged
  if (!file) fail("{}: cannot open ({})", path, std::strerror(errno));
  std::vector<std::string> lines;
  std::string current;
  char buffer[1 << 16];
  int n = 0;
  while ((n = gzread(file, buffer, sizeof(buffer))) > 0) {
    for (int i = 0; i < n; ++i) {
      if (buffer[i] == '\n') {
        lines.push_back(std::move(current));
        current.clear();
      } else {
        current.push_back(buffer[i]);
      }
    }
  }
  int error = 0;
  const char* message = gzerror(file, &error);
  bool failed = n < 0 || (error != Z_OK && error != Z_STREAM_END);
  std::string reason = failed ? message : "";
  gzclose(file);
  if (failed) fail("{}: read error ({}); is the file truncated or not gzip?", path, reason);
  if (!current.empty()) lines.push_back(std::move(current));
  return lines;
}

std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::vector<nlohmann::json> records;
  auto lines = read_lines(path);
  for (size_t i = 0; i < lines.size(); ++i) {
    if (lines[i].empty()) continue;
    try {
      records.push_back(nlohmann::json::parse(lines[i]));
    } catch (const nlohmann::json::exception& e) {
      fail("{}:{}: not valid JSON ({})", path, i + 1, e.what());
    }
  }
  return records;
}

nlohmann::json read_json_file(const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) fail("{}: cannot be opened; check the path and permissions", file);
  std::stringstream buffer;
  buffer << in.rdbuf();
  try {
    return nlohmann::json::parse(buffer.str());
  } catch (const nlohmann::json::parse_error& e) {
    fail("{}: malformed JSON ({}); the file is truncated or not JSON", file, e.what());
  }
}

std::optional<nlohmann::json> read_json_file_if_exists(const std::string& file) {
  if (!std::filesystem::exists(file)) return std::nullopt;
  return read_json_file(file);
}

double number_or_nan(const nlohmann::json& object, const char* key) {
  auto it = object.find(key);
  return it != object.end() && it->is_number() ? it->get<double>() : std::nan("");
}

void keep_jsonl_records(const std::string& path, const std::function<bool(const nlohmann::json&)>& keep) {
  if (!std::filesystem::exists(path)) return;
  std::string kept;
  for (const auto& line : read_lines(path)) {
    nlohmann::json record = nlohmann::json::parse(line, nullptr, false);
    if (!record.is_discarded() && record.is_object() && keep(record)) kept += line + "\n";
  }
  write_file_atomic(path, kept);
}

void keep_jsonl_before_step(const std::string& path, int64_t first_dropped) {
  keep_jsonl_records(path, [first_dropped](const nlohmann::json& record) {
    auto step = record.find("step");
    return step != record.end() && step->is_number_integer() && step->get<int64_t>() < first_dropped;
  });
}

}  // namespace grm
