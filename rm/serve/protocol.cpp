#include "rm/serve/protocol.hpp"

#include <nlohmann/json.hpp>

namespace grm {

namespace {

using json = nlohmann::json;

// Every element of body[field] as a string; throws BadRequest naming the field and the first bad element.
std::vector<std::string> string_array(const json& body, const char* field) {
  const auto it = body.find(field);
  if (it == body.end()) throw BadRequest(fmt::format("field \"{}\" is missing", field));
  if (!it->is_array()) {
    throw BadRequest(fmt::format("field \"{}\" must be an array of strings, got {}", field, it->type_name()));
  }
  std::vector<std::string> texts;
  texts.reserve(it->size());
  for (const auto& element : *it) {
    if (!element.is_string()) {
      throw BadRequest(
          fmt::format("field \"{}\"[{}] must be a string, got {}", field, texts.size(), element.type_name()));
    }
    texts.push_back(element.get<std::string>());
  }
  return texts;
}

}  // namespace

std::vector<ScoreItem> parse_reward_request(std::string_view body) {
  json request;
  try {
    request = json::parse(body);
  } catch (const json::parse_error& e) {
    throw BadRequest(fmt::format("request body is not valid JSON: {}", e.what()));
  }
  if (!request.is_object()) {
    throw BadRequest(fmt::format(
        "request body must be a JSON object with \"query\" or \"prompts\" and \"responses\", got {}",
        request.type_name()));
  }
  std::vector<ScoreItem> items;
  if (request.contains("query")) {
    for (auto& text : string_array(request, "query")) items.push_back({"", std::move(text), true, true});
    return items;
  }
  if (!request.contains("prompts") && !request.contains("responses")) {
    throw BadRequest("request body needs \"query\" (OpenRLHF) or \"prompts\" and \"responses\"");
  }
  auto prompts = string_array(request, "prompts");
  auto responses = string_array(request, "responses");
  if (prompts.size() != responses.size()) {
    throw BadRequest(
        fmt::format("fields \"prompts\" ({} items) and \"responses\" ({} items) must have the "
                    "same length",
                    prompts.size(), responses.size()));
  }
  // grm's own clients say which responses were cut at max_new_tokens; every response of others finished.
  std::vector<bool> finished(prompts.size(), true);
  if (request.contains("finished")) {
    const json& flags = request["finished"];
    if (!flags.is_array() || flags.size() != prompts.size())
      throw BadRequest(fmt::format("field \"finished\" must be an array of {} booleans, one per response",
                                   prompts.size()));
    for (size_t i = 0; i < flags.size(); ++i) {
      if (!flags[i].is_boolean())
        throw BadRequest(
            fmt::format("field \"finished\"[{}] must be true or false, got {}", i, flags[i].dump()));
      finished[i] = flags[i].get<bool>();
    }
  }
  items.reserve(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i)
    items.push_back({std::move(prompts[i]), std::move(responses[i]), finished[i], false});
  return items;
}

std::string encode_reward_request(const std::vector<ScoreItem>& items, size_t begin, size_t end) {
  size_t formatted = 0;
  for (size_t i = begin; i < end; ++i) formatted += items[i].formatted ? 1 : 0;
  if (formatted > 0 && formatted < end - begin)
    fail("a reward request holds either templated texts or raw (prompt, response) pairs, not both");
  if (formatted > 0 && formatted == end - begin) {
    json query = json::array();
    for (size_t i = begin; i < end; ++i) query.push_back(items[i].response);
    return json{{"query", std::move(query)}}.dump();
  }
  json prompts = json::array();
  json responses = json::array();
  json finished = json::array();
  bool any_cut = false;
  for (size_t i = begin; i < end; ++i) {
    prompts.push_back(items[i].prompt);
    responses.push_back(items[i].response);
    finished.push_back(items[i].finished);
    any_cut = any_cut || !items[i].finished;
  }
  json request{{"prompts", std::move(prompts)}, {"responses", std::move(responses)}};
  if (any_cut) request["finished"] = std::move(finished);  // only grm's servers read it
  return request.dump();
}

std::string encode_query_request(const std::vector<std::string>& texts) {
  return json{{"query", texts}}.dump();
}

std::string encode_rewards(const std::vector<double>& rewards) {
  // nlohmann writes doubles with max_digits10, so served scores equal in-process ones exactly. The same
  // values under each key OpenRLHF's clients read: 0.11's server replies {rewards, scores, extra_logs},
  // older clients read "rewards" or "score".
  return json{{"rewards", rewards}, {"scores", rewards}, {"score", rewards}, {"extra_logs", json::object()}}
      .dump();
}

std::vector<double> decode_rewards(std::string_view body, size_t n_expected) {
  const json reply = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (reply.is_discarded() || !reply.is_object()) {
    fail("reward server answered with something other than a JSON object: {:.200}", body);
  }
  // Whichever of the keys OpenRLHF's servers have used the answer carries.
  auto it = reply.end();
  for (const char* key : {"rewards", "scores", "score"})
    if (it == reply.end() || !it->is_array()) it = reply.find(key);
  if (it == reply.end() || !it->is_array())
    fail("reward server answer has no \"rewards\", \"scores\" or \"score\" array: {:.200}", body);
  if (it->size() != n_expected) {
    fail(
        "reward server returned {} rewards for {} texts; is the URL pointing at a grm or OpenRLHF reward "
        "server?",
        it->size(), n_expected);
  }
  std::vector<double> rewards;
  rewards.reserve(n_expected);
  for (const auto& reward : *it) {
    if (!reward.is_number()) {
      fail("reward server returned a non-number reward ({}) at index {}; the model produced NaN or inf?",
           reward.dump(), rewards.size());
    }
    rewards.push_back(reward.get<double>());
  }
  return rewards;
}

std::string encode_error(std::string_view message) {
  // Replace rather than throw on invalid UTF-8: messages may quote a client's bytes.
  return json{{"error", message}}.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string decode_error(std::string_view body) {
  const json reply = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (reply.is_object() && reply.contains("error") && reply["error"].is_string()) {
    return reply["error"].get<std::string>();
  }
  return std::string(body.substr(0, 200));
}

HttpUrl parse_http_url(const std::string& url) {
  constexpr std::string_view scheme = "http://";
  if (url.compare(0, scheme.size(), scheme) != 0) {
    fail("reward server URL '{}' must start with http:// (TLS is not supported; use a tunnel or a proxy)",
         url);
  }
  HttpUrl parsed;
  const std::string rest = url.substr(scheme.size());
  const size_t slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  parsed.prefix = slash == std::string::npos ? "" : rest.substr(slash);
  // "[::1]:5000" keeps its colons inside the brackets.
  const size_t colon = authority.rfind(':');
  const size_t bracket = authority.rfind(']');
  if (colon != std::string::npos && (bracket == std::string::npos || colon > bracket)) {
    parsed.port = authority.substr(colon + 1);
    authority.resize(colon);
    if (parsed.port.empty() || parsed.port.find_first_not_of("0123456789") != std::string::npos) {
      fail("reward server URL '{}' has a bad port '{}'", url, parsed.port);
    }
  }
  if (authority.size() >= 2 && authority.front() == '[' && authority.back() == ']') {
    authority = authority.substr(1, authority.size() - 2);
  }
  if (authority.empty()) fail("reward server URL '{}' has no host", url);
  parsed.host = authority;
  constexpr std::string_view endpoint = "/get_reward";
  while (!parsed.prefix.empty() && parsed.prefix.back() == '/') parsed.prefix.pop_back();
  if (parsed.prefix.size() >= endpoint.size() &&
      parsed.prefix.compare(parsed.prefix.size() - endpoint.size(), endpoint.size(), endpoint) == 0) {
    parsed.prefix.resize(parsed.prefix.size() - endpoint.size());
  }
  return parsed;
}

}  // namespace grm
