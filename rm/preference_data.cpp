#include "rm/preference_data.hpp"

#include <cerrno>
#include <cstring>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/log.hpp"
#include "core/text_io.hpp"

namespace grm {
namespace {

using nlohmann::json;

// A record-level problem: becomes an error or a counted skip depending on on_bad_record.
struct BadRecord : std::runtime_error {
  using std::runtime_error::runtime_error;
};

const json& field(const json& record, const std::string& name) {
  if (!record.contains(name)) throw BadRecord(fmt::format("missing field '{}'", name));
  return record[name];
}

std::string string_field(const json& record, const std::string& name) {
  const json& value = field(record, name);
  if (!value.is_string())
    throw BadRecord(fmt::format("field '{}' must be a string, got {}", name, value.type_name()));
  return value.get<std::string>();
}

double number_field(const json& record, const std::string& name) {
  const json& value = field(record, name);
  if (!value.is_number())
    throw BadRecord(fmt::format("field '{}' must be a number, got {}", name, value.type_name()));
  return value.get<double>();
}

// The plain Human/Assistant layout for message lists: the prompt ends with "\n\nAssistant:" so the
// response follows it, as in the transcript format.
std::pair<std::string, std::string> split_messages(const json& messages, const std::string& name) {
  if (!messages.is_array() || messages.empty())
    throw BadRecord(fmt::format("field '{}' must be a non-empty list of {{role, content}} messages", name));
  std::string prompt;
  for (size_t i = 0; i < messages.size(); ++i) {
    const json& m = messages[i];
    if (!m.is_object() || !m.contains("role") || !m.contains("content") || !m["role"].is_string() ||
        !m["content"].is_string())
      throw BadRecord(
          fmt::format("field '{}[{}]' must be {{\"role\": string, \"content\": string}}", name, i));
    std::string role = m["role"].get<std::string>(), content = m["content"].get<std::string>();
    if (i + 1 == messages.size()) {
      if (role != "assistant")
        throw BadRecord(
            fmt::format("field '{}': the last message must be the assistant's, got '{}'", name, role));
      return {prompt + "\n\nAssistant:", " " + content};
    }
    prompt += (role == "assistant" ? "\n\nAssistant: "
               : role == "system"  ? "\n\nSystem: "
                                   : "\n\nHuman: ") +
              content;
  }
  return {prompt, ""};
}

std::pair<std::string, std::string> split_transcript(const std::string& text, const std::string& name) {
  static const std::string kMarker = "\n\nAssistant:";
  size_t at = text.rfind(kMarker);
  if (at == std::string::npos)
    throw BadRecord(fmt::format("field '{}' has no \"\\n\\nAssistant:\" turn", name));
  return {text.substr(0, at + kMarker.size()), text.substr(at + kMarker.size())};
}

// A conversation given either as a message list or as a transcript string.
std::pair<std::string, std::string> split_conversation(const json& value, const std::string& name) {
  if (value.is_array()) return split_messages(value, name);
  if (value.is_string()) return split_transcript(value.get<std::string>(), name);
  throw BadRecord(fmt::format("field '{}' must be a message list or a transcript string", name));
}

std::string detect_format(const json& record, const DataConfig& c) {
  if (record.contains(c.a_field) && record.contains(c.a_rating_field)) return "rated";
  if (record.contains(c.winner_field)) return "winner";
  if (record.contains(c.chosen_field) && record[c.chosen_field].is_array()) return "messages";
  if (!record.contains(c.prompt_field) && record.contains(c.chosen_field) &&
      record[c.chosen_field].is_string() &&
      record[c.chosen_field].get<std::string>().find("\n\nAssistant:") != std::string::npos)
    return "transcript";
  return "pairs";
}

// Parses one record; returns false for a dropped tie.
bool parse_record(const json& record, const DataConfig& c, const std::string& format, PreferencePair& pair,
                  DataReport& report) {
  if (!record.is_object()) throw BadRecord("a record must be a JSON object");
  if (format == "pairs") {
    pair.prompt = record.contains(c.prompt_field) ? string_field(record, c.prompt_field) : "";
    pair.chosen = string_field(record, c.chosen_field);
    pair.rejected = string_field(record, c.rejected_field);
    if (!c.margin_field.empty()) pair.margin = number_field(record, c.margin_field);
  } else if (format == "messages") {
    auto [prompt, chosen] = split_messages(field(record, c.chosen_field), c.chosen_field);
    auto [prompt_r, rejected] = split_messages(field(record, c.rejected_field), c.rejected_field);
    if (prompt != prompt_r)
      throw BadRecord("chosen and rejected conversations differ before the last message");
    pair.prompt = prompt, pair.chosen = chosen, pair.rejected = rejected;
  } else if (format == "transcript") {
    std::string chosen = string_field(record, c.chosen_field),
                rejected = string_field(record, c.rejected_field);
    auto [prompt, chosen_response] = split_transcript(chosen, c.chosen_field);
    auto [prompt_r, rejected_response] = split_transcript(rejected, c.rejected_field);
    if (prompt != prompt_r) {
      // Some dialogues (HH-RLHF) diverge before the last turn: the prompt is then their shared part, up to
      // the last Assistant turn both still have in common, and each response is the rest of its dialogue.
      size_t common = 0;
      while (common < chosen.size() && common < rejected.size() && chosen[common] == rejected[common])
        ++common;
      static const std::string kMarker = "\n\nAssistant:";
      size_t at = chosen.substr(0, common).rfind(kMarker);
      if (at == std::string::npos)
        throw BadRecord("chosen and rejected transcripts share no Assistant turn before they differ");
      prompt = chosen.substr(0, at + kMarker.size());
      chosen_response = chosen.substr(prompt.size());
      rejected_response = rejected.substr(prompt.size());
    }
    pair.prompt = prompt, pair.chosen = chosen_response, pair.rejected = rejected_response;
  } else if (format == "rated") {
    auto [prompt_a, a] = split_conversation(field(record, c.a_field), c.a_field);
    auto [prompt_b, b] = split_conversation(field(record, c.b_field), c.b_field);
    if (prompt_a != prompt_b) throw BadRecord("the two conversations differ before the last response");
    double rating_a = number_field(record, c.a_rating_field),
           rating_b = number_field(record, c.b_rating_field);
    pair.prompt = prompt_a;
    pair.tie = rating_a == rating_b;
    pair.chosen = rating_a >= rating_b ? a : b;
    pair.rejected = rating_a >= rating_b ? b : a;
    pair.margin = std::abs(rating_a - rating_b);
  } else {  // winner
    pair.prompt = record.contains(c.prompt_field) ? string_field(record, c.prompt_field) : "";
    std::string a = string_field(record, c.response_a_field), b = string_field(record, c.response_b_field);
    // A number or a string; numbers are matched by their JSON text ("0", "1.5").
    const json& label = field(record, c.winner_field);
    if (!label.is_string() && !label.is_number())
      throw BadRecord(
          fmt::format("field '{}' must be a string or a number, got {}", c.winner_field, label.type_name()));
    std::string given = label.is_string() ? label.get<std::string>() : label.dump();
    auto mapped = c.winner_values.find(given);
    std::string winner = mapped != c.winner_values.end() ? mapped->second : given;
    for (auto& ch : winner) ch = char(std::tolower(ch));
    if (winner == "a" || winner == "model_a") {
      pair.chosen = a, pair.rejected = b;
    } else if (winner == "b" || winner == "model_b") {
      pair.chosen = b, pair.rejected = a;
    } else if (winner == "tie" || winner == "tie (bothbad)" || winner == "draw") {
      pair.tie = true, pair.chosen = a, pair.rejected = b;
    } else {
      throw BadRecord(fmt::format(
          "field '{}' must be a, b, model_a, model_b or tie, got {}; map the data's own values with "
          "winner_values, e.g. {{0: a, 1: b, 2: tie}}",
          c.winner_field, label.dump()));
    }
  }
  if (pair.tie) {
    if (c.ties == "drop") {
      ++report.ties_dropped;
      return false;
    }
    ++report.ties_kept;
  }
  for (const auto& g : c.group_fields)
    if (record.contains(g) && !record[g].is_null())
      pair.groups[g] = record[g].is_string() ? record[g].get<std::string>() : record[g].dump();
  return true;
}

}  // namespace

std::vector<PreferencePair> read_preferences(const DataConfig& c, DataReport* report_out) {
  if (c.path.empty()) fail("data.path is empty: name a JSONL preference file");
  DataReport report;
  std::vector<PreferencePair> pairs;
  auto lines = read_lines(c.path);
  for (size_t i = 0; i < lines.size(); ++i) {
    if (c.limit > 0 && int64_t(pairs.size()) >= c.limit) break;
    const std::string& line = lines[i];
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    ++report.records;
    std::string origin = fmt::format("{}:{}", c.path, i + 1);
    try {
      json record;
      try {
        record = json::parse(line);
      } catch (const json::exception& e) {
        throw BadRecord(fmt::format("not valid JSON ({})", e.what()));
      }
      std::string format = c.format == "auto" ? detect_format(record, c) : c.format;
      PreferencePair pair;
      pair.origin = origin;
      if (parse_record(record, c, format, pair, report)) pairs.push_back(std::move(pair));
    } catch (const BadRecord& e) {
      if (c.on_bad_record == "error")
        fail("{}: {} (fix the record, map the field with data.*_field, or set data.on_bad_record: skip)",
             origin, e.what());
      ++report.skipped;
      if (report.skipped_examples.size() < 5) report.skipped_examples.push_back(origin + ": " + e.what());
    }
  }
  report.pairs = int64_t(pairs.size());
  if (report.skipped > 0)
    log::warn("{}: skipped {} bad records of {} (first: {})", c.path, report.skipped, report.records,
              report.skipped_examples.front());
  if (report_out) *report_out = report;
  return pairs;
}

std::vector<std::string> read_prompt_file(const std::string& path) {
  std::vector<std::string> prompts;
  auto lines = read_lines(path);
  for (size_t i = 0; i < lines.size(); ++i) {
    if (lines[i].find_first_not_of(" \t\r") == std::string::npos) continue;
    json record = json::parse(lines[i], nullptr, false);
    if (record.is_discarded() || !record.is_object())
      fail("{}:{}: not a JSON object; prompt files hold one {{\"id\", \"prompt\"}} record per line", path,
           i + 1);
    if (!record.contains("prompt") || !record["prompt"].is_string())
      fail("{}:{}: needs a string field 'prompt'", path, i + 1);
    prompts.push_back(record["prompt"].get<std::string>());
  }
  if (prompts.empty()) fail("{}: no prompts", path);
  return prompts;
}

}  // namespace grm
