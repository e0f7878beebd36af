#include "bench/serve_load.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <optional>
#include <vector>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "core/error.hpp"
#include "rm/serve/protocol.hpp"

namespace grm {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

constexpr auto kRequestTimeout = std::chrono::seconds(30);
constexpr size_t kDistinctBodies = 16;  // varied texts without building one body per request

// Shared by all workers; they run on one thread, so no locking.
struct LoadState {
  int n_requests = 0;
  int n_issued = 0;
  int n_failures = 0;
  std::vector<double> latencies_ms;  // of successful requests
  size_t texts_per_request = 0;
  std::vector<std::string> bodies;
  std::string target;
  std::string host_header;
  tcp::resolver::results_type endpoints;
  Clock::time_point last_answer;
};

// One keep-alive connection sending requests back to back, reconnecting after any failure.
class LoadWorker {
 public:
  LoadWorker(asio::io_context& io_context, LoadState& state) : io_context_(io_context), state_(state) {}

  void next() {
    if (state_.n_issued >= state_.n_requests) {
      if (stream_) stream_->close();
      return;
    }
    const int index = state_.n_issued++;
    request_ = {http::verb::post, state_.target, 11};
    request_.set(http::field::host, state_.host_header);
    request_.set(http::field::content_type, "application/json");
    request_.body() = state_.bodies[static_cast<size_t>(index) % state_.bodies.size()];
    request_.prepare_payload();
    if (stream_) return send();
    stream_.emplace(io_context_);
    buffer_.clear();
    stream_->expires_after(kRequestTimeout);
    stream_->async_connect(state_.endpoints, [this](beast::error_code error, const tcp::endpoint&) {
      if (error) return fail_request();
      beast::error_code ignored;
      stream_->socket().set_option(tcp::no_delay(true), ignored);
      send();
    });
  }

 private:
  void send() {
    sent_at_ = Clock::now();
    stream_->expires_after(kRequestTimeout);
    http::async_write(*stream_, request_, [this](beast::error_code error, size_t) {
      if (error) return fail_request();
      parser_.emplace();
      http::async_read(*stream_, buffer_, *parser_, [this](beast::error_code read_error, size_t) {
        if (read_error) return fail_request();
        on_answer();
      });
    });
  }

  void on_answer() {
    const auto& response = parser_->get();
    state_.last_answer = Clock::now();
    bool ok = response.result() == http::status::ok;
    if (ok) {
      try {
        decode_rewards(response.body(), state_.texts_per_request);
      } catch (const Error&) {
        ok = false;
      }
    }
    if (!ok) return fail_request();
    state_.latencies_ms.push_back(
        std::chrono::duration<double, std::milli>(state_.last_answer - sent_at_).count());
    if (!response.keep_alive()) stream_.reset();
    next();
  }

  void fail_request() {
    ++state_.n_failures;
    state_.last_answer = Clock::now();
    stream_.reset();  // a fresh connection for the next request, whatever went wrong on this one
    next();
  }

  asio::io_context& io_context_;
  LoadState& state_;
  std::optional<beast::tcp_stream> stream_;
  beast::flat_buffer buffer_;
  http::request<http::string_body> request_;
  std::optional<http::response_parser<http::string_body>> parser_;
  Clock::time_point sent_at_;
};

double percentile(const std::vector<double>& sorted, double fraction) {
  if (sorted.empty()) return 0;
  const auto rank = static_cast<size_t>(std::ceil(fraction * static_cast<double>(sorted.size())));
  return sorted[std::clamp<size_t>(rank, 1, sorted.size()) - 1];
}

}  // namespace

LoadResult run_load_test(const std::string& url, int n_requests, int concurrency, int texts_per_request,
                         double time_limit_s) {
  if (n_requests < 1 || concurrency < 1 || texts_per_request < 1 || !(time_limit_s > 0)) {
    fail(
        "load test needs positive counts and time limit, got n_requests={} concurrency={} "
        "texts_per_request={} "
        "time_limit_s={}",
        n_requests, concurrency, texts_per_request, time_limit_s);
  }
  const HttpUrl parsed = parse_http_url(url);
  asio::io_context io_context;
  LoadState state;
  beast::error_code error;
  state.endpoints = tcp::resolver(io_context).resolve(parsed.host, parsed.port, error);
  if (error) fail("load test cannot resolve '{}': {}", parsed.host, error.message());
  for (const auto& entry : state.endpoints) {
    if (!entry.endpoint().address().is_loopback()) {
      fail("load test refuses '{}': it only targets servers on this machine (127.0.0.1, ::1, localhost)",
           url);
    }
  }
  state.n_requests = n_requests;
  state.texts_per_request = static_cast<size_t>(texts_per_request);
  state.target = parsed.prefix + "/get_reward";
  state.host_header = parsed.host + ":" + parsed.port;
  state.latencies_ms.reserve(static_cast<size_t>(n_requests));
  for (size_t b = 0; b < kDistinctBodies; ++b) {
    std::vector<std::string> texts;
    for (size_t t = 0; t < state.texts_per_request; ++t) {
      texts.push_back(
          fmt::format("User: Tell me a short story about a fox, number {}.\nAssistant: Once upon a time a "
                      "small fox named "
                      "Pip lived at the edge of forest {}. Every morning Pip ran to the river to count the "
                      "stones, and one "
                      "day stone {} was missing. Pip searched all day and found it under a sleeping bear.",
                      b, t, b * 31 + t));
    }
    state.bodies.push_back(encode_query_request(texts));
  }

  std::vector<std::unique_ptr<LoadWorker>> workers;
  const int n_workers = std::min(concurrency, n_requests);
  for (int i = 0; i < n_workers; ++i) workers.push_back(std::make_unique<LoadWorker>(io_context, state));
  const auto started = Clock::now();
  for (auto& worker : workers) worker->next();
  io_context.run_for(std::chrono::milliseconds(static_cast<int64_t>(time_limit_s * 1000)));

  LoadResult result;
  result.n_requests = n_requests;
  result.concurrency = n_workers;
  result.texts_per_request = texts_per_request;
  result.n_succeeded = static_cast<int>(state.latencies_ms.size());
  result.hit_time_limit = result.n_succeeded + state.n_failures < n_requests;
  result.n_failures = n_requests - result.n_succeeded;  // unanswered requests count as failures
  const auto finished = result.hit_time_limit ? Clock::now() : state.last_answer;
  result.seconds = std::chrono::duration<double>(finished - started).count();
  if (result.seconds > 0) result.requests_per_second = result.n_succeeded / result.seconds;
  std::sort(state.latencies_ms.begin(), state.latencies_ms.end());
  result.p50_ms = percentile(state.latencies_ms, 0.50);
  result.p99_ms = percentile(state.latencies_ms, 0.99);
  result.max_ms = state.latencies_ms.empty() ? 0 : state.latencies_ms.back();
  return result;
}

std::string format_load_result(const LoadResult& result) {
  return fmt::format(
      "{} requests ({} texts each, {} connections) in {:.2f} s: {:.0f} requests/s, p50 {:.2f} ms, p99 {:.2f} "
      "ms, "
      "max {:.2f} ms, {} failures{}",
      result.n_requests, result.texts_per_request, result.concurrency, result.seconds,
      result.requests_per_second, result.p50_ms, result.p99_ms, result.max_ms, result.n_failures,
      result.hit_time_limit ? " (stopped at the time limit)" : "");
}

}  // namespace grm
