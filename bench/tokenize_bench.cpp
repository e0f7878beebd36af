#include "bench/tokenize_bench.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>

#include <zlib.h>
#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "policy/tokenizer/tokenizer.hpp"

namespace grm {

std::vector<std::string> read_preference_texts(const std::string& jsonl_gz_path) {
  gzFile file = gzopen(jsonl_gz_path.c_str(), "rb");  // zlib reads plain files transparently too
  if (!file) fail("{}: cannot be opened; check the path", jsonl_gz_path);
  std::vector<std::string> texts;
  std::string line;
  std::vector<char> buffer(1 << 16);
  size_t line_number = 0;
  auto parse_line = [&] {
    ++line_number;
    if (line.find_first_not_of(" \t\r\n") == std::string::npos) return;
    nlohmann::json record;
    try {
      record = nlohmann::json::parse(line);
    } catch (const nlohmann::json::parse_error& e) {
      fail("{}:{}: malformed JSON ({})", jsonl_gz_path, line_number, e.what());
    }
    for (const char* key : {"chosen", "rejected"})
      if (record.contains(key) && record[key].is_string()) texts.push_back(record[key].get<std::string>());
  };
  // gzgets returns at most one line per call, in pieces when the line is longer than the buffer.
  while (gzgets(file, buffer.data(), int(buffer.size()))) {
    line += buffer.data();
    if (!line.empty() && line.back() == '\n') {
      parse_line();
      line.clear();
    }
  }
  int error = 0;
  const char* message = gzerror(file, &error);
  std::string reason = error != Z_OK && error != Z_STREAM_END ? message : "";
  gzclose(file);
  if (!reason.empty()) fail("{}: read error ({}); the file is truncated or corrupt", jsonl_gz_path, reason);
  if (!line.empty()) parse_line();
  return texts;
}

double bench_tokenize(const std::string& tokenizer_path, const std::string& jsonl_gz_path, int n_threads) {
  auto tokenizer = load_tokenizer(tokenizer_path);
  std::vector<std::string> texts = read_preference_texts(jsonl_gz_path);
  size_t n_bytes = 0;
  for (const auto& text : texts) n_bytes += text.size();
  double best = 0;
  size_t n_tokens = 0;
  for (int run = 0; run < 3; ++run) {
    auto start = std::chrono::steady_clock::now();
    auto ids = tokenizer->encode_batch(texts, true, n_threads);
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best = std::max(best, double(n_bytes) / 1e6 / seconds);
    n_tokens = 0;
    for (const auto& row : ids) n_tokens += row.size();
  }
  std::printf("tokenize: %s on %s: %zu texts, %.2f MB, %zu tokens, %d threads: %.2f MB/s (best of 3)\n",
              tokenizer_path.c_str(), jsonl_gz_path.c_str(), texts.size(), double(n_bytes) / 1e6, n_tokens,
              n_threads, best);
  return best;
}

}  // namespace grm
