// Reading the text files every stage reads: lines (plain or gzip-compressed), JSON and JSONL. Errors name
// the file (and the line) and say what is wrong, as grm::Error.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace grm {

// Every line of a text file, transparently gunzipping *.gz (a plain file reads unchanged).
std::vector<std::string> read_lines(const std::string& path);
// One JSON value per non-blank line; a malformed line is an error naming file:line.
std::vector<nlohmann::json> read_jsonl(const std::string& path);
// A whole JSON file; malformed JSON is an error naming the file and the parser's position.
nlohmann::json read_json_file(const std::string& file);
// The same, or nullopt when the file does not exist.
std::optional<nlohmann::json> read_json_file_if_exists(const std::string& file);

// Rewrites an append-only JSONL log (atomically) keeping the records `keep` accepts; torn and unparsable
// lines go too. How a resumed stage forgets what its killed run logged after the checkpoint it resumes
// from, so the log never repeats a row: train-rm (per ensemble member) and PPO use it. A missing file is
// left missing.
void keep_jsonl_records(const std::string& path, const std::function<bool(const nlohmann::json&)>& keep);
// The common case: the records whose integer "step" is below first_dropped.
void keep_jsonl_before_step(const std::string& path, int64_t first_dropped);

// object[key] as a number, NaN when it is missing or not a number (null is how JSON writes NaN): the
// results' from_json functions read optional numbers with it, so a file from an older run still loads
// and a reader can tell "not recorded" from 0.
double number_or_nan(const nlohmann::json& object, const char* key);

}  // namespace grm
