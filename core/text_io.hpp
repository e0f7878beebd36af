// Reading the text files every stage reads: lines (plain or gzip-compressed), JSON and JSONL. Errors name
// the file (and the line) and say what is wrong, as grm::Error.
#pragma once

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

// object[key] as a number, NaN when it is missing or not a number (null is how JSON writes NaN): the
// results' from_json functions read optional numbers with it, so a file from an older run still loads
// and a reader can tell "not recorded" from 0.
double number_or_nan(const nlohmann::json& object, const char* key);

}  // namespace grm
