// Reward serving over HTTP/1.1: a server that scores texts for remote clients (OpenRLHF's
// `--remote_rm_url` protocol and grm's own; the client is rm/serve/client.hpp). Model-agnostic: the server
// calls a BatchScorer (rm/serve/score_item.hpp), which the caller builds from a loaded reward model
// (truncation "as training does" is the scorer's job).
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
// rm/serve/ includes only core/ and itself: nothing model-side, no LibTorch (tests/CMakeLists.txt checks).
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "rm/serve/score_item.hpp"

namespace grm {

struct ServerOptions {
  std::string host = "127.0.0.1";   // loopback unless told otherwise
  int port = 5000;                  // 0: an ephemeral port, see RewardServer::port()
  int max_batch = 64;               // items per scorer call
  int max_wait_ms = 5;              // how long the oldest queued item may wait for a fuller batch
  std::string token;                // bearer token required on /get_reward and /metrics; empty: no auth
  size_t max_body_bytes = 8 << 20;  // larger bodies get 413 without being read
  size_t max_text_bytes = 1 << 20;  // a request with a longer text (prompt + response) gets 413
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

}  // namespace grm
