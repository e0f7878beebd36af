// Reward serving over HTTP/1.1: a server that scores texts for remote clients (OpenRLHF's
// `--remote_rm_url` protocol and grm's own), and the client that grm's BoN and PPO stages use for
// `gold: {url: ...}`. Both are model-agnostic: the server calls a BatchScorer, which the caller builds
// from a loaded reward model (truncation "as training does" is the scorer's job).
//
// Endpoints:
//   POST /get_reward  {"query": [texts]}                      -> {"rewards": [...]}   (OpenRLHF)
//                     {"prompts": [...], "responses": [...]}  -> {"rewards": [...]}
//   GET  /health      -> {"status": "ok"}   (never needs the token, so launchers can poll it)
//   GET  /metrics     -> Prometheus text: responses by code, scorer errors, batch sizes, latency
// Errors answer {"error": "message"} with 400, 401, 404, 405, 413 or 500.
//
// Requests from concurrent clients are batched dynamically: one batching thread collects items from the
// queued requests until it holds max_batch of them or the oldest has waited max_wait_ms, then calls the
// scorer once. The HTTP side runs on Boost.Beast/Asio; none of it appears in this header.
//
// May include: cluster/ (errors, logging) and the standard library. No LibTorch.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace grm {

// One text to score. OpenRLHF's "query" texts (prompt and response already joined by the chat
// template) arrive as prompt = "", response = text.
struct ScoreItem {
  std::string prompt;
  std::string response;
};

// Scores a batch, one reward per item in order. Called from one thread at a time (the server's batching
// thread), so it may keep per-model state without locks. May throw: the requests in that batch get a 500
// with the exception's message, and the server carries on.
using BatchScorer = std::function<std::vector<double>(const std::vector<ScoreItem>&)>;

struct ServerOptions {
  std::string host = "127.0.0.1";   // loopback unless told otherwise
  int port = 5000;                  // 0: an ephemeral port, see RewardServer::port()
  int max_batch = 64;               // items per scorer call
  int max_wait_ms = 5;              // how long the oldest queued item may wait for a fuller batch
  std::string token;                // bearer token required on /get_reward and /metrics; empty: no auth
  size_t max_body_bytes = 8 << 20;  // larger bodies get 413 without being read
  int n_io_threads = 2;             // threads running the HTTP side (the scorer has its own)
  int read_timeout_ms = 30000;      // a whole request (headers and body) must arrive within this; also
                                    // bounds idle keep-alive connections and writes to clients that stall
};

class RewardServer {
 public:
  RewardServer(ServerOptions options, BatchScorer scorer);
  ~RewardServer();  // stops if still running
  RewardServer(const RewardServer&) = delete;
  RewardServer& operator=(const RewardServer&) = delete;

  int port() const;  // the bound port (after start(); resolves port 0)
  void start();      // binds and listens; returns once connections are being accepted
  // Graceful: stops accepting, closes idle keep-alive connections, lets requests already received be
  // scored and answered, then joins every thread. Idempotent; must not be called from the scorer.
  void stop();
  void wait();  // blocks until stop() has finished (from any thread)

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Blocks until SIGTERM or SIGINT arrives (or the server is stopped elsewhere), then stops the server
// gracefully. Used by `grm serve`.
void serve_until_signal(RewardServer& server);

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
