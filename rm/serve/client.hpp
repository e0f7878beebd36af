// The client of a served reward model (`grm serve`, or any server speaking rm/serve/server.hpp's protocol),
// used by rm/'s Scorer for `gold: {url: ...}` and by benchmarks.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "rm/serve/score_item.hpp"

namespace grm {

// Client for a served reward model: keep-alive HTTP/1.1 on one connection, reconnects and retries when the
// connection fails (scoring is idempotent), splits long lists into requests of `chunk` items. Throws
// grm::Error when the server answers with an error or stays unreachable. One thread at a time.
class RewardClient {
 public:
  // url: http://host:port[/prefix][/get_reward]; /health is looked up beside /get_reward.
  explicit RewardClient(std::string url, std::string token = {}, int chunk = 256);
  ~RewardClient();
  RewardClient(const RewardClient&) = delete;
  RewardClient& operator=(const RewardClient&) = delete;

  std::vector<double> score(const std::vector<ScoreItem>& items);  // one reward per item, in order
  bool healthy();  // GET /health answered 200 within a couple of seconds; never throws

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace grm
