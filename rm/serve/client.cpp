// RewardClient: blocking calls built on Beast's asynchronous operations, because only those honour
// tcp_stream deadlines; each call runs the client's private io_context until its operation is done.
#include <optional>
#include <thread>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "core/error.hpp"
#include "rm/serve/client.hpp"
#include "rm/serve/protocol.hpp"

namespace grm {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

constexpr int kScoreAttempts = 6;  // with the backoff below, rides out ~6 s of server restart
constexpr auto kFirstBackoff = 200ms;
constexpr auto kConnectTimeout = 10s;
// Generous: a large gold RM on CPU may take minutes for one chunk. A request that times out is not
// retried, because the server may still be working on it.
constexpr auto kScoreTimeout = 900s;
constexpr auto kHealthTimeout = 2s;

// The connection failed (refused, reset, closed while idle): retrying on a fresh one may succeed.
struct ConnectionError : Error {
  using Error::Error;
};

}  // namespace

struct RewardClient::Impl {
  HttpUrl url;
  std::string url_text;
  std::string token;
  size_t chunk;

  asio::io_context io_context;
  std::optional<beast::tcp_stream> stream;  // the kept-alive connection, if any
  beast::flat_buffer buffer;

  // Starts one asynchronous operation with a completion handler and runs it to the end.
  template <typename Start>
  beast::error_code run(Start&& start) {
    beast::error_code result;
    start([&result](beast::error_code error, auto&&...) { result = error; });
    io_context.restart();
    io_context.run();
    return result;
  }

  void connect(std::chrono::seconds timeout) {
    tcp::resolver resolver(io_context);
    beast::error_code error;
    const auto endpoints = resolver.resolve(url.host, url.port, error);
    if (error) throw ConnectionError(fmt::format("cannot resolve '{}': {}", url.host, error.message()));
    stream.emplace(io_context);
    stream->expires_after(std::min(timeout, std::chrono::seconds(kConnectTimeout)));
    error = run([&](auto handler) { stream->async_connect(endpoints, std::move(handler)); });
    if (error) throw ConnectionError(fmt::format("cannot connect: {}", error.message()));
    stream->socket().set_option(tcp::no_delay(true), error);
    buffer.clear();
  }

  // One request/response on the kept-alive connection, connecting first if needed. Throws
  // ConnectionError when the transport fails, Error on a timeout.
  http::response<http::string_body> exchange_once(const http::request<http::string_body>& request,
                                                  std::chrono::seconds timeout) {
    if (!stream) connect(timeout);
    stream->expires_after(timeout);
    beast::error_code error =
        run([&](auto handler) { http::async_write(*stream, request, std::move(handler)); });
    http::response_parser<http::string_body> parser;
    parser.body_limit(256u << 20);  // rewards are small; this only guards against a wrong URL
    if (!error)
      error = run([&](auto handler) { http::async_read(*stream, buffer, parser, std::move(handler)); });
    if (error) {
      stream.reset();
      if (error == beast::error::timeout) {
        fail("no answer within {} s (the request is not retried: the server may still be scoring it)",
             timeout.count());
      }
      throw ConnectionError(error.message());
    }
    auto response = parser.release();
    if (!response.keep_alive()) stream.reset();
    return response;
  }

  http::response<http::string_body> exchange(http::verb method, const std::string& endpoint, std::string body,
                                             std::chrono::seconds timeout, int n_attempts) {
    http::request<http::string_body> request{method, url.prefix + endpoint, 11};
    request.set(http::field::host, url.host + ":" + url.port);
    request.set(http::field::user_agent, "grm-reward-client");
    if (!token.empty()) request.set(http::field::authorization, "Bearer " + token);
    if (method == http::verb::post) request.set(http::field::content_type, "application/json");
    request.body() = std::move(body);
    request.prepare_payload();
    auto backoff = std::chrono::duration_cast<std::chrono::milliseconds>(kFirstBackoff);
    for (int attempt = 1;; ++attempt) {
      // A kept-alive connection the server has since closed fails on first use: retry that at once.
      const bool reused = stream.has_value();
      try {
        return exchange_once(request, timeout);
      } catch (const ConnectionError& e) {
        if (attempt >= n_attempts) {
          fail("reward server {} unreachable after {} attempts: {}; is `grm serve` running there?", url_text,
               attempt, e.what());
        }
        if (!reused) {
          std::this_thread::sleep_for(backoff);
          backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
        }
      }
    }
  }
};

RewardClient::RewardClient(std::string url, std::string token, int chunk) : impl_(std::make_unique<Impl>()) {
  if (chunk < 1) fail("reward client chunk must be at least 1, got {}", chunk);
  impl_->url = parse_http_url(url);
  impl_->url_text = std::move(url);
  impl_->token = std::move(token);
  impl_->chunk = static_cast<size_t>(chunk);
}

RewardClient::~RewardClient() = default;

std::vector<double> RewardClient::score(const std::vector<ScoreItem>& items) {
  std::vector<double> rewards;
  rewards.reserve(items.size());
  for (size_t begin = 0; begin < items.size(); begin += impl_->chunk) {
    const size_t end = std::min(items.size(), begin + impl_->chunk);
    const auto response =
        impl_->exchange(http::verb::post, "/get_reward", encode_reward_request(items, begin, end),
                        kScoreTimeout, kScoreAttempts);
    if (response.result() != http::status::ok) {
      fail("reward server {} answered {} to texts {}..{}: {}", impl_->url_text, response.result_int(), begin,
           end - 1, decode_error(response.body()));
    }
    const auto chunk_rewards = decode_rewards(response.body(), end - begin);
    rewards.insert(rewards.end(), chunk_rewards.begin(), chunk_rewards.end());
  }
  return rewards;
}

bool RewardClient::healthy() {
  try {
    // Two attempts: the first may meet a kept-alive connection the server has closed.
    return impl_->exchange(http::verb::get, "/health", "", kHealthTimeout, 2).result() == http::status::ok;
  } catch (const std::exception&) {
    return false;
  }
}

}  // namespace grm
