// A bounded load generator for a reward server on this machine: `concurrency` keep-alive connections
// send OpenRLHF-style {"query": [...]} requests until n_requests have been answered, and the answers
// are checked (status 200, one reward per text). Used by `grm bench serve`. It refuses any host that is
// not loopback, so it cannot be pointed at someone else's server.
//
// May include: core/error.hpp and the standard library.
#pragma once

#include <string>

namespace grm {

struct LoadResult {
  int n_requests = 0;   // requests the test was asked to send
  int concurrency = 0;  // connections sending them
  int texts_per_request = 0;
  int n_succeeded = 0;  // answered 200 with the right number of rewards
  int n_failures = 0;   // everything else, including requests not sent before the time limit
  bool hit_time_limit = false;
  double seconds = 0;              // wall time from the first connection to the last answer
  double requests_per_second = 0;  // n_succeeded / seconds
  double p50_ms = 0;               // latency of successful requests, send to full answer
  double p99_ms = 0;
  double max_ms = 0;
};

// Throws grm::Error for a non-loopback URL or nonsensical counts. Each request carries texts_per_request
// texts of a few hundred characters; time_limit_s bounds the whole run.
LoadResult run_load_test(const std::string& url, int n_requests, int concurrency, int texts_per_request,
                         double time_limit_s = 120);

// One line for logs and the README: requests, concurrency, requests/s, p50/p99, failures.
std::string format_load_result(const LoadResult& result);

}  // namespace grm
