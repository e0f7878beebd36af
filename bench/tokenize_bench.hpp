// Tokenizer throughput on a preference file, for `grm bench tokenize`.
#pragma once

#include <string>
#include <vector>

namespace grm {

// The `chosen` and `rejected` strings of a gzip-compressed (or plain) JSONL file, in file order.
std::vector<std::string> read_preference_texts(const std::string& jsonl_gz_path);

// Encodes every chosen and rejected text of the file with encode_batch on n_threads threads; prints and
// returns the best of three runs in MB/s (10^6 bytes of input text per second).
double bench_tokenize(const std::string& tokenizer_path, const std::string& jsonl_gz_path, int n_threads);

}  // namespace grm
