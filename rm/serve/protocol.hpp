// The wire format of reward serving (JSON bodies and URLs), shared by the server, RewardClient and the
// load generator so the three cannot drift apart. Pure functions, no networking.
//
// May include: rm/serve/score_item.hpp, core/error.hpp and the standard library.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "core/error.hpp"
#include "rm/serve/score_item.hpp"

namespace grm {

// A request the client got wrong; the server answers 400 with what() as the message.
struct BadRequest : Error {
  using Error::Error;
};

// Reads a /get_reward body. "query" (OpenRLHF: texts its policy's chat template already joined) wins
// when present, because OpenRLHF sends "prompts" and "labels" beside it, and its items are `formatted`;
// otherwise "prompts" and "responses" must be equal-length string arrays (raw pairs, which the reward
// model renders with its own chat template), with an optional "finished" array of booleans (false: the
// response was cut at max_new_tokens). Throws BadRequest naming the field at fault.
std::vector<ScoreItem> parse_reward_request(std::string_view body);

// {"prompts": [...], "responses": [...]} for items [begin, end), and "finished" when one was cut;
// {"query": [...]} when they are all `formatted`. Throws Error for a mix of the two.
std::string encode_reward_request(const std::vector<ScoreItem>& items, size_t begin, size_t end);
std::string encode_query_request(const std::vector<std::string>& texts);  // {"query": [...]}

std::string encode_rewards(const std::vector<double>& rewards);  // {"rewards": [...]}, round-trip precision
// Reads {"rewards": [...]} and checks it holds n_expected numbers; throws Error otherwise.
std::vector<double> decode_rewards(std::string_view body, size_t n_expected);

std::string encode_error(std::string_view message);  // {"error": "..."}
// The "error" member of an error body, or the start of the raw body when it is not one of ours.
std::string decode_error(std::string_view body);

// http://host[:port][/prefix]; the endpoints are prefix + "/get_reward" and prefix + "/health". A
// trailing "/get_reward" is dropped from the prefix, so OpenRLHF-style URLs work as given.
struct HttpUrl {
  std::string host;
  std::string port = "80";
  std::string prefix;  // "" or "/something", never ending in '/'
};
HttpUrl parse_http_url(const std::string& url);  // throws Error for anything but plain http

}  // namespace grm
