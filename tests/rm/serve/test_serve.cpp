// Reward serving: the wire format, the dynamic batcher, and the HTTP server and client against a fake
// scorer on an ephemeral loopback port. Every hostile case ends by checking that the server still
// answers /health.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <future>
#include <mutex>
#include <numeric>
#include <optional>
#include <random>
#include <thread>

#include <gtest/gtest.h>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include "bench/serve_load.hpp"
#include "core/error.hpp"
#include "rm/serve/batcher.hpp"
#include "rm/serve/client.hpp"
#include "rm/serve/protocol.hpp"
#include "rm/serve/server.hpp"
#include "tests/test_util.hpp"

namespace grm {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using json = nlohmann::json;
using Response = http::response<http::string_body>;
using namespace std::chrono_literals;

// Tells prompt from response apart, so a swapped or misordered field shows in the reward.
double fake_reward(const ScoreItem& item) {
  return 1000.0 * static_cast<double>(item.prompt.size()) + static_cast<double>(item.response.size());
}

std::vector<ScoreItem> query_items(const std::vector<std::string>& texts) {
  std::vector<ScoreItem> items;
  for (const auto& text : texts) items.push_back({"", text});
  return items;
}

// A blocking test client on Beast's asynchronous operations, so every step has a deadline and a
// wedged server fails the test instead of hanging it.
class Connection {
 public:
  explicit Connection(int port, std::chrono::milliseconds timeout = 5000ms)
      : stream_(io_context_), timeout_(timeout) {
    stream_.expires_after(timeout_);
    const tcp::endpoint endpoint(asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port));
    const auto error = run([&](auto handler) { stream_.async_connect(endpoint, std::move(handler)); });
    if (error) throw std::runtime_error("connect: " + error.message());
  }

  beast::error_code send(std::string_view bytes) {
    stream_.expires_after(timeout_);
    return run([&](auto handler) { asio::async_write(stream_, asio::buffer(bytes), std::move(handler)); });
  }

  std::optional<Response> try_read() {
    http::response_parser<http::string_body> parser;
    stream_.expires_after(timeout_);
    const auto error =
        run([&](auto handler) { http::async_read(stream_, buffer_, parser, std::move(handler)); });
    if (error) return std::nullopt;
    return parser.release();
  }

  Response read() {
    auto response = try_read();
    if (!response) throw std::runtime_error("no HTTP response from the server");
    return std::move(*response);
  }

  Response request(http::verb method, const std::string& target, std::string body = "",
                   const std::string& token = "") {
    http::request<http::string_body> request{method, target, 11};
    request.set(http::field::host, "127.0.0.1");
    if (!token.empty()) request.set(http::field::authorization, "Bearer " + token);
    request.body() = std::move(body);
    request.prepare_payload();
    stream_.expires_after(timeout_);
    const auto error = run([&](auto handler) { http::async_write(stream_, request, std::move(handler)); });
    if (error) throw std::runtime_error("write: " + error.message());
    return read();
  }

  // True when the server closes the connection within `within`; any data it sends first is skipped.
  bool closed_by_server(std::chrono::milliseconds within) {
    stream_.expires_after(within);
    for (;;) {
      char byte;
      const auto error =
          run([&](auto handler) { stream_.async_read_some(asio::buffer(&byte, 1), std::move(handler)); });
      if (error == beast::error::timeout) return false;
      if (error) return true;  // end of file or reset
    }
  }

  void shutdown_send() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
  }

 private:
  template <typename Start>
  beast::error_code run(Start&& start) {
    beast::error_code result;
    start([&result](beast::error_code error, auto&&...) { result = error; });
    io_context_.restart();
    io_context_.run();
    return result;
  }

  asio::io_context io_context_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::chrono::milliseconds timeout_;
};

Response http_request(int port, http::verb method, const std::string& target, std::string body = "",
                      const std::string& token = "") {
  return Connection(port).request(method, target, std::move(body), token);
}

std::string error_message(const Response& response) {
  const json body = json::parse(response.body());
  return body.at("error").get<std::string>();
}

std::vector<double> rewards_of(const Response& response) {
  return json::parse(response.body()).at("rewards").get<std::vector<double>>();
}

// A server with a fake scorer that records batch sizes, can be slowed down, and fails on "boom".
class RewardServerTest : public ::testing::Test {
 protected:
  void start(ServerOptions options = {}) {
    options.port = 0;
    server_ = std::make_unique<RewardServer>(options, [this](const std::vector<ScoreItem>& batch) {
      if (scorer_entered_) scorer_entered_->set_value();
      scorer_entered_.reset();
      std::this_thread::sleep_for(std::chrono::milliseconds(scorer_delay_ms_.load()));
      std::vector<double> rewards;
      for (const auto& item : batch) {
        if (item.response == "boom") throw std::runtime_error("model exploded on purpose");
        rewards.push_back(fake_reward(item));
      }
      std::lock_guard<std::mutex> lock(mutex_);
      batch_sizes_.push_back(batch.size());
      return rewards;
    });
    server_->start();
    port_ = server_->port();
  }

  std::vector<size_t> batch_sizes() {
    std::lock_guard<std::mutex> lock(mutex_);
    return batch_sizes_;
  }

  void expect_healthy() {
    const auto response = http_request(port_, http::verb::get, "/health");
    EXPECT_EQ(response.result(), http::status::ok);
    EXPECT_EQ(json::parse(response.body()), json({{"status", "ok"}}));
  }

  Response post_reward(const std::string& body, const std::string& token = "") {
    return http_request(port_, http::verb::post, "/get_reward", body, token);
  }

  std::string url() const { return fmt::format("http://127.0.0.1:{}/get_reward", port_); }

  std::mutex mutex_;
  std::vector<size_t> batch_sizes_;
  std::atomic<int> scorer_delay_ms_{0};
  std::optional<std::promise<void>> scorer_entered_;  // set before start(); fulfilled by the first batch
  int port_ = 0;
  std::unique_ptr<RewardServer> server_;  // last: stopped before the scorer's state goes away
};

// ---- wire format --------------------------------------------------------------------------------------

TEST(RewardProtocol, ParsesBothRequestFormats) {
  const auto query = parse_reward_request(R"({"query": ["a b", "c"], "prompts": ["x"], "labels": [1]})");
  ASSERT_EQ(query.size(), 2u);  // OpenRLHF's extra "prompts" and "labels" are ignored
  EXPECT_EQ(query[0].prompt, "");
  EXPECT_EQ(query[0].response, "a b");
  const auto pairs = parse_reward_request(R"({"prompts": ["p1", "p2"], "responses": ["r1", "r2"]})");
  ASSERT_EQ(pairs.size(), 2u);
  EXPECT_EQ(pairs[1].prompt, "p2");
  EXPECT_EQ(pairs[1].response, "r2");
  // Queries are already templated; raw pairs are not, and finished unless grm's clients say otherwise.
  EXPECT_TRUE(query[0].formatted);
  EXPECT_FALSE(pairs[0].formatted);
  EXPECT_TRUE(pairs[0].finished && pairs[1].finished);
  const auto cut = parse_reward_request(
      R"({"prompts": ["p1", "p2"], "responses": ["r1", "r2"], "finished": [true, false]})");
  EXPECT_TRUE(cut[0].finished);
  EXPECT_FALSE(cut[1].finished);
  EXPECT_EQ(parse_reward_request(encode_reward_request(cut, 0, 2)).at(1).finished, false);
  const auto queried = parse_reward_request(encode_reward_request(query, 0, 2));
  EXPECT_TRUE(queried[0].formatted && queried[1].formatted);
  EXPECT_EQ(queried[1].response, "c");
  for (const char* bad : {R"({"prompts": ["p"], "responses": ["r"], "finished": [1]})",
                          R"({"prompts": ["p"], "responses": ["r"], "finished": [true, false]})"})
    EXPECT_THROW(parse_reward_request(bad), BadRequest) << bad;
}

TEST(RewardProtocol, EncodedRewardsRoundTripExactly) {
  const std::vector<double> rewards = {0.1, -1.0 / 3.0, 1e-300, 12345.678901234567};
  EXPECT_EQ(decode_rewards(encode_rewards(rewards), rewards.size()), rewards);
  EXPECT_THROW(decode_rewards(encode_rewards(rewards), 3), Error);
  EXPECT_THROW(decode_rewards(R"({"rewards": [1, null]})", 2), Error);
  EXPECT_THROW(decode_rewards("<html>", 1), Error);
}

// The reply carries the rewards under every key OpenRLHF's clients read, and our client reads any of them.
TEST(RewardProtocol, RepliesUnderEveryKeyOpenRlhfClientsRead) {
  auto reply = nlohmann::json::parse(encode_rewards({0.5, -2}));
  for (const char* key : {"rewards", "scores", "score"})
    EXPECT_EQ(reply[key], nlohmann::json({0.5, -2})) << key;
  EXPECT_TRUE(reply["extra_logs"].is_object());
  EXPECT_EQ(decode_rewards(R"({"scores": [1.5]})", 1), std::vector<double>{1.5});
  EXPECT_EQ(decode_rewards(R"({"score": [2.5], "extra_logs": {}})", 1), std::vector<double>{2.5});
  EXPECT_NE(error_of([] { decode_rewards(R"({"values": [1]})", 1); }).find("no \"rewards\", \"scores\""),
            std::string::npos);
}

TEST(RewardProtocol, ParsesUrls) {
  auto url = parse_http_url("http://127.0.0.1:5000/get_reward");
  EXPECT_EQ(url.host, "127.0.0.1");
  EXPECT_EQ(url.port, "5000");
  EXPECT_EQ(url.prefix, "");
  url = parse_http_url("http://rm.local/api/get_reward/");
  EXPECT_EQ(url.host, "rm.local");
  EXPECT_EQ(url.port, "80");
  EXPECT_EQ(url.prefix, "/api");
  url = parse_http_url("http://[::1]:8080");
  EXPECT_EQ(url.host, "::1");
  EXPECT_EQ(url.port, "8080");
  EXPECT_THROW(parse_http_url("https://rm.local/get_reward"), Error);
  EXPECT_THROW(parse_http_url("http://rm.local:80a/"), Error);
  EXPECT_THROW(parse_http_url("http://:5000"), Error);
}

// ---- batcher ------------------------------------------------------------------------------------------

// A batcher's scorer that holds its first batch until release(), so the requests submitted meanwhile
// queue up behind it and the batches that follow are known exactly; it records every batch's size.
class GatedScorer {
 public:
  BatchScorer scorer() {
    return [this](const std::vector<ScoreItem>& batch) {
      {
        std::lock_guard<std::mutex> lock(mutex_);
        sizes_.push_back(batch.size());
        if (sizes_.size() == 1) first_entered_.set_value();
      }
      released_.wait();
      std::vector<double> rewards;
      for (const auto& item : batch) rewards.push_back(fake_reward(item));
      return rewards;
    };
  }
  void wait_for_first_batch() { first_entered_.get_future().wait(); }
  void release() { release_.set_value(); }
  std::vector<size_t> sizes() {
    std::lock_guard<std::mutex> lock(mutex_);
    return sizes_;
  }

 private:
  std::promise<void> release_;
  std::shared_future<void> released_ = release_.get_future().share();
  std::promise<void> first_entered_;
  std::mutex mutex_;
  std::vector<size_t> sizes_;
};

// The scorer blocks on its first batch, so the next requests queue up behind it and the batches that
// follow are known exactly.
TEST(RewardBatcher, PacksQueuedRequestsAndSplitsLargeOnes) {
  GatedScorer gate;
  RewardBatcher batcher(gate.scorer(), /*max_batch=*/5, /*max_wait_ms=*/0);
  std::vector<std::promise<std::vector<double>>> answers(3);
  auto done = [&](size_t i) {
    return [&answers, i](std::vector<double> rewards, std::string error) {
      EXPECT_EQ(error, "");
      answers[i].set_value(std::move(rewards));  // throws if called twice
    };
  };
  batcher.submit(query_items({"a"}), done(0));
  gate.wait_for_first_batch();
  batcher.submit(query_items({"bb", "ccc", "dddd"}), done(1));
  batcher.submit(query_items({"1", "22", "333", "4444"}), done(2));
  gate.release();
  EXPECT_EQ(answers[0].get_future().get(), (std::vector<double>{1}));
  EXPECT_EQ(answers[1].get_future().get(), (std::vector<double>{2, 3, 4}));
  EXPECT_EQ(answers[2].get_future().get(), (std::vector<double>{1, 2, 3, 4}));
  batcher.stop();
  EXPECT_EQ(gate.sizes(), (std::vector<size_t>{1, 5, 2}));
}

TEST(RewardBatcher, FailedBatchFailsItsRequestsOnceAndDropsTheirRest) {
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::promise<void> first_entered;
  std::atomic<int> n_calls{0};
  RewardBatcher batcher(
      [&](const std::vector<ScoreItem>& batch) {
        if (n_calls++ == 0) {
          first_entered.set_value();
          released.wait();
        }
        std::vector<double> rewards;
        for (const auto& item : batch) {
          if (item.response == "boom") throw std::runtime_error("bad text");
          rewards.push_back(fake_reward(item));
        }
        return rewards;
      },
      /*max_batch=*/2, /*max_wait_ms=*/0);
  std::promise<std::string> first, split, after;
  batcher.submit(query_items({"x"}), [&](std::vector<double>, std::string error) { first.set_value(error); });
  first_entered.get_future().wait();
  // Split over several batches; its first fails, so the rest must never be scored.
  batcher.submit(query_items({"boom", "y", "z", "w", "v"}),
                 [&](std::vector<double> rewards, std::string error) {
                   EXPECT_TRUE(rewards.empty());
                   split.set_value(error);
                 });
  batcher.submit(query_items({"ok"}), [&](std::vector<double> rewards, std::string error) {
    EXPECT_EQ(rewards, std::vector<double>{2});
    after.set_value(error);
  });
  release.set_value();
  EXPECT_EQ(first.get_future().get(), "");
  EXPECT_NE(split.get_future().get().find("bad text"), std::string::npos);
  EXPECT_EQ(after.get_future().get(), "");
  batcher.stop();
  // {x}; then {boom, ok} (a fair share each) fails and is scored again request by request: {boom} fails,
  // {ok} is answered; the rest of the failed request is never scored.
  EXPECT_EQ(n_calls.load(), 4);
}

// A one-text request queued behind a huge one is answered in the next batch, not after all of it.
TEST(RewardBatcher, ASmallRequestIsNotHeldBehindAHugeOne) {
  GatedScorer gate;
  std::atomic<size_t> batches_before_small{0};
  RewardBatcher batcher(gate.scorer(), /*max_batch=*/4, /*max_wait_ms=*/0);
  std::promise<void> huge_done, small_done;
  batcher.submit(query_items({"a"}), [](std::vector<double>, std::string) {});
  gate.wait_for_first_batch();
  batcher.submit(query_items(std::vector<std::string>(40, "xx")), [&](std::vector<double> r, std::string e) {
    EXPECT_EQ(r.size(), 40u);
    EXPECT_EQ(e, "");
    huge_done.set_value();
  });
  batcher.submit(query_items({"yyy"}), [&](std::vector<double> r, std::string e) {
    EXPECT_EQ(r, std::vector<double>{3});
    EXPECT_EQ(e, "");
    batches_before_small = gate.sizes().size();  // called on the batching thread, after its batch
    small_done.set_value();
  });
  gate.release();
  small_done.get_future().wait();
  huge_done.get_future().wait();
  batcher.stop();
  EXPECT_EQ(batches_before_small.load(), 2u);  // the blocked first batch, then a shared one
  EXPECT_EQ(gate.sizes(), (std::vector<size_t>{1, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 1}));  // 40 + 1 in 4s, then 1
}

TEST(RewardBatcher, WrongNumberOfRewardsIsAnError) {
  RewardBatcher batcher([](const std::vector<ScoreItem>&) { return std::vector<double>{1, 2, 3}; }, 8, 0);
  std::promise<std::string> error;
  batcher.submit(query_items({"a"}),
                 [&](std::vector<double>, std::string message) { error.set_value(message); });
  EXPECT_NE(error.get_future().get().find("returned 3 rewards for a batch of 1"), std::string::npos);
}

// ---- server: endpoints --------------------------------------------------------------------------------

TEST_F(RewardServerTest, ScoresOpenRlhfQueries) {
  start();
  const auto response = post_reward(R"({"query": ["hello", "", "xyz"], "prompts": ["ignored"]})");
  ASSERT_EQ(response.result(), http::status::ok) << response.body();
  EXPECT_EQ(response[http::field::content_type], "application/json");
  EXPECT_EQ(rewards_of(response), (std::vector<double>{5, 0, 3}));
}

TEST_F(RewardServerTest, ScoresPromptResponsePairs) {
  start();
  const auto response = post_reward(R"({"prompts": ["ab", ""], "responses": ["cde", "f"]})");
  ASSERT_EQ(response.result(), http::status::ok) << response.body();
  EXPECT_EQ(rewards_of(response), (std::vector<double>{2003, 1}));
  EXPECT_EQ(rewards_of(post_reward(R"({"query": []})")), std::vector<double>{});
}

TEST_F(RewardServerTest, KeepsConnectionsAlive) {
  start();
  Connection connection(port_);
  for (int i = 0; i < 3; ++i) {
    const auto response = connection.request(http::verb::post, "/get_reward", R"({"query": ["four"]})");
    ASSERT_EQ(response.result(), http::status::ok);
    EXPECT_TRUE(response.keep_alive());
    EXPECT_EQ(rewards_of(response), std::vector<double>{4});
  }
  // HTTP/1.0 without keep-alive: answered, then closed.
  connection.send("GET /health HTTP/1.0\r\n\r\n");
  EXPECT_EQ(connection.read().result(), http::status::ok);
  EXPECT_TRUE(connection.closed_by_server(2000ms));
}

TEST_F(RewardServerTest, ReportsMetrics) {
  start();
  for (int i = 0; i < 3; ++i) ASSERT_EQ(post_reward(R"({"query": ["ab", "c"]})").result(), http::status::ok);
  ASSERT_EQ(post_reward("{").result(), http::status::bad_request);
  const auto response = http_request(port_, http::verb::get, "/metrics");
  ASSERT_EQ(response.result(), http::status::ok);
  EXPECT_EQ(response[http::field::content_type], "text/plain; version=0.0.4");
  const std::string& text = response.body();
  for (const char* expected :
       {"grm_rm_requests_total{code=\"200\"} 3\n", "grm_rm_requests_total{code=\"400\"} 1\n",
        "grm_rm_texts_scored_total 6\n", "grm_rm_scorer_errors_total 0\n",
        "grm_rm_request_duration_seconds_count 3\n", "grm_rm_batch_size_bucket{le=\"+Inf\"} 3\n",
        "# TYPE grm_rm_batch_size histogram\n", "grm_rm_open_connections "}) {
    EXPECT_NE(text.find(expected), std::string::npos) << "missing " << expected << " in\n" << text;
  }
}

TEST_F(RewardServerTest, UnknownPathIs404AndWrongMethodIs405) {
  start();
  auto response = http_request(port_, http::verb::get, "/nope");
  EXPECT_EQ(response.result(), http::status::not_found);
  EXPECT_NE(error_message(response).find("/nope"), std::string::npos);
  response = http_request(port_, http::verb::get, "/get_reward");
  EXPECT_EQ(response.result(), http::status::method_not_allowed);
  EXPECT_EQ(response[http::field::allow], "POST");
  response = http_request(port_, http::verb::post, "/health", "{}");
  EXPECT_EQ(response.result(), http::status::method_not_allowed);
  expect_healthy();
}

// ---- server: batching ---------------------------------------------------------------------------------

TEST_F(RewardServerTest, BatchesConcurrentClients) {
  ServerOptions options;
  options.max_wait_ms = 200;  // long enough that simultaneous requests surely meet in one batch
  start(options);
  constexpr int n_clients = 16;
  std::vector<std::future<std::vector<double>>> results;
  std::promise<void> go;
  std::shared_future<void> ready = go.get_future().share();
  for (int i = 0; i < n_clients; ++i) {
    results.push_back(std::async(std::launch::async, [this, ready, i] {
      Connection connection(port_);
      ready.wait();
      return rewards_of(
          connection.request(http::verb::post, "/get_reward",
                             json({{"query", {std::string(static_cast<size_t>(i), 'x')}}}).dump()));
    }));
  }
  go.set_value();
  for (int i = 0; i < n_clients; ++i)
    EXPECT_EQ(results[i].get(), std::vector<double>{static_cast<double>(i)});
  const auto sizes = batch_sizes();
  EXPECT_EQ(std::accumulate(sizes.begin(), sizes.end(), size_t{0}), size_t{n_clients});
  EXPECT_GT(*std::max_element(sizes.begin(), sizes.end()), 1u) << "no two requests shared a batch";
}

TEST_F(RewardServerTest, SplitsRequestsAtMaxBatch) {
  ServerOptions options;
  options.max_batch = 4;
  start(options);
  std::vector<std::string> texts;
  std::vector<double> expected;
  for (size_t n = 1; n <= 10; ++n) {
    texts.push_back(std::string(n, 'y'));
    expected.push_back(static_cast<double>(n));
  }
  const auto response = post_reward(json({{"query", texts}}).dump());
  ASSERT_EQ(response.result(), http::status::ok);
  EXPECT_EQ(rewards_of(response), expected);
  EXPECT_EQ(batch_sizes(), (std::vector<size_t>{4, 4, 2}));
}

// ---- server: hostile and broken requests --------------------------------------------------------------

TEST_F(RewardServerTest, RequiresTheBearerTokenWhenSet) {
  ServerOptions options;
  options.token = "s3cret-token";
  start(options);
  const std::string body = R"({"query": ["abc"]})";
  for (const std::string& token : {std::string(), std::string("s3cret-tokem"), std::string("s3cret"),
                                   std::string("s3cret-token-and-more")}) {
    const auto response = post_reward(body, token);
    EXPECT_EQ(response.result(), http::status::unauthorized) << "token '" << token << "'";
    EXPECT_EQ(response[http::field::www_authenticate], "Bearer");
    EXPECT_NE(error_message(response).find("bearer token"), std::string::npos);
  }
  const auto response = post_reward(body, "s3cret-token");
  ASSERT_EQ(response.result(), http::status::ok);
  EXPECT_EQ(rewards_of(response), std::vector<double>{3});
  // Lower-case scheme is accepted too.
  Connection connection(port_);
  connection.send(
      "POST /get_reward HTTP/1.1\r\nHost: x\r\nAuthorization: bearer s3cret-token\r\nContent-Length: " +
      std::to_string(body.size()) + "\r\n\r\n" + body);
  EXPECT_EQ(connection.read().result(), http::status::ok);
  EXPECT_EQ(http_request(port_, http::verb::get, "/metrics").result(), http::status::unauthorized);
  EXPECT_EQ(http_request(port_, http::verb::get, "/metrics", "", "s3cret-token").result(), http::status::ok);
  expect_healthy();  // no token needed
}

TEST_F(RewardServerTest, RefusesHugeContentLengthWithoutReadingTheBody) {
  ServerOptions options;
  options.read_timeout_ms = 10000;  // the 413 must come long before the body would have timed out
  start(options);
  Connection connection(port_);
  const auto started = std::chrono::steady_clock::now();
  connection.send(
      "POST /get_reward HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
      "Content-Length: 1000000000000\r\n\r\n");
  const auto response = connection.read();
  EXPECT_EQ(response.result(), http::status::payload_too_large);
  EXPECT_NE(error_message(response).find("limit of 8388608 bytes"), std::string::npos);
  EXPECT_LT(std::chrono::steady_clock::now() - started, 2s);
  EXPECT_TRUE(connection.closed_by_server(3000ms));
  expect_healthy();
}

TEST_F(RewardServerTest, RefusesChunkedBodyOverTheLimit) {
  ServerOptions options;
  options.max_body_bytes = 1000;
  start(options);
  Connection connection(port_);
  const std::string chunk(800, 'a');
  connection.send("POST /get_reward HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n320\r\n" +
                  chunk + "\r\n320\r\n" + chunk + "\r\n0\r\n\r\n");
  EXPECT_EQ(connection.read().result(), http::status::payload_too_large);
  expect_healthy();
}

TEST_F(RewardServerTest, AnswersExpectContinueBeforeTheBody) {
  start();
  Connection connection(port_);
  const std::string body = R"({"query": ["12345"]})";
  connection.send("POST /get_reward HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: " +
                  std::to_string(body.size()) + "\r\n\r\n");
  EXPECT_EQ(connection.read().result(), http::status::continue_);
  connection.send(body);
  const auto response = connection.read();
  ASSERT_EQ(response.result(), http::status::ok);
  EXPECT_EQ(rewards_of(response), std::vector<double>{5});
}

TEST_F(RewardServerTest, MalformedBodiesGet400NamingTheField) {
  start();
  const std::pair<std::string, std::string> cases[] = {
      {"{\"query\": [", "not valid JSON"},
      {"", "not valid JSON"},
      {"{\"query\": [\"\xff\xfe\"]}", "not valid JSON"},  // invalid UTF-8
      {"[1, 2]", "must be a JSON object"},
      {"{\"query\": \"one text\"}", "field \"query\" must be an array of strings, got string"},
      {"{\"query\": [\"ok\", 3]}", "field \"query\"[1] must be a string, got number"},
      {"{\"prompts\": [\"a\"], \"responses\": [\"b\", \"c\"]}",
       "fields \"prompts\" (1 items) and \"responses\" (2 items) must have the same length"},
      {"{\"prompts\": [\"a\"]}", "field \"responses\" is missing"},
      {"{\"prompts\": {\"a\": 1}, \"responses\": []}",
       "field \"prompts\" must be an array of strings, got object"},
      {"{\"texts\": [\"a\"]}", "needs \"query\""},
  };
  for (const auto& [body, expected] : cases) {
    const auto response = post_reward(body);
    EXPECT_EQ(response.result(), http::status::bad_request) << body;
    EXPECT_NE(error_message(response).find(expected), std::string::npos)
        << "body " << body << " gave " << response.body();
  }
  EXPECT_TRUE(batch_sizes().empty());
  expect_healthy();
}

TEST_F(RewardServerTest, SurvivesGarbageAndTruncatedRequests) {
  start();
  {
    Connection connection(port_);  // not HTTP at all
    connection.send("GARBAGE GARBAGE\r\n\r\n");
    const auto response = connection.try_read();
    ASSERT_TRUE(response.has_value());
    EXPECT_EQ(response->result(), http::status::bad_request);
    EXPECT_NE(error_message(*response).find("malformed HTTP request"), std::string::npos);
  }
  {
    Connection connection(port_);  // headers cut off mid-line, then the client leaves
    connection.send("POST /get_reward HTTP/1.1\r\nHost: x\r\nContent-Le");
    connection.shutdown_send();
    EXPECT_TRUE(connection.closed_by_server(2000ms));
  }
  {
    Connection connection(port_);  // body shorter than its Content-Length, then the client leaves
    connection.send("POST /get_reward HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"query\":");
    connection.shutdown_send();
    EXPECT_TRUE(connection.closed_by_server(2000ms));
  }
  {
    Connection connection(port_);  // a header far beyond Beast's limit
    connection.send("GET /health HTTP/1.1\r\nX-Junk: " + std::string(20000, 'j') + "\r\n\r\n");
    const auto response = connection.try_read();
    ASSERT_TRUE(response.has_value());
    EXPECT_EQ(response->result(), http::status::request_header_fields_too_large);
  }
  // Deep nesting must not overflow the parser's stack.
  const auto nested = post_reward(std::string(100000, '[') + std::string(100000, ']'));
  EXPECT_EQ(nested.result(), http::status::bad_request);
  std::mt19937 rng(7);
  for (int i = 0; i < 40; ++i) {
    std::string bytes(std::uniform_int_distribution<size_t>(1, 3000)(rng), '\0');
    for (auto& byte : bytes) byte = static_cast<char>(rng());
    if (i % 2)
      bytes =
          "POST /get_reward HTTP/1.1\r\nContent-Length: " + std::to_string(bytes.size()) + "\r\n\r\n" + bytes;
    Connection connection(port_);
    connection.send(bytes);
    connection.shutdown_send();
    EXPECT_TRUE(connection.closed_by_server(2000ms)) << "random request " << i;
  }
  expect_healthy();
}

TEST_F(RewardServerTest, SlowClientsNeitherBlockOthersNorStayForever) {
  ServerOptions options;
  options.n_io_threads = 1;  // so a design that parks a thread per slow client would fail outright
  options.read_timeout_ms = 500;
  start(options);
  std::vector<std::unique_ptr<Connection>> idle;
  for (int i = 0; i < 8; ++i) {
    idle.push_back(std::make_unique<Connection>(port_));
    idle.back()->send("POST /get_reward HTTP/1.1\r\nHost:");
  }
  // A trickling client keeps sending, one byte at a time, but the deadline covers the whole request.
  std::atomic<bool> trickle_cut{false};
  std::thread trickler([&] {
    Connection connection(port_);
    const std::string request =
        "POST /get_reward HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + std::string(1000, ' ');
    for (char byte : request) {
      if (connection.send(std::string_view(&byte, 1))) {
        trickle_cut = true;
        return;
      }
      std::this_thread::sleep_for(50ms);
    }
  });
  for (int i = 0; i < 5; ++i) {
    const auto response = post_reward(R"({"query": ["abc"]})");
    EXPECT_EQ(response.result(), http::status::ok);
  }
  expect_healthy();
  for (auto& connection : idle) EXPECT_TRUE(connection->closed_by_server(3000ms));
  const auto waited = std::chrono::steady_clock::now();
  trickler.join();
  EXPECT_TRUE(trickle_cut.load());
  EXPECT_LT(std::chrono::steady_clock::now() - waited, 3s);  // 1000 bytes at 50 ms would take 50 s
  expect_healthy();
}

TEST_F(RewardServerTest, ScorerErrorGives500AndServingContinues) {
  start();
  const auto failed = post_reward(R"({"query": ["fine", "boom"]})");
  EXPECT_EQ(failed.result(), http::status::internal_server_error);
  EXPECT_NE(error_message(failed).find("model exploded on purpose"), std::string::npos);
  const auto response = post_reward(R"({"query": ["fine"]})");
  ASSERT_EQ(response.result(), http::status::ok);
  EXPECT_EQ(rewards_of(response), std::vector<double>{4});
  const auto metrics = http_request(port_, http::verb::get, "/metrics").body();
  EXPECT_NE(metrics.find("grm_rm_scorer_errors_total 1\n"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("grm_rm_requests_total{code=\"500\"} 1\n"), std::string::npos) << metrics;
}

// ---- server: lifecycle --------------------------------------------------------------------------------

TEST_F(RewardServerTest, StopFinishesInFlightRequestsThenRefusesConnections) {
  scorer_delay_ms_ = 300;
  scorer_entered_.emplace();
  auto entered = scorer_entered_->get_future();
  start();
  Connection idle(port_);  // a keep-alive connection between requests: stop() closes it
  ASSERT_EQ(idle.request(http::verb::get, "/health").result(), http::status::ok);
  auto in_flight = std::async(std::launch::async, [this] {
    return Connection(port_).request(http::verb::post, "/get_reward", R"({"query": ["in flight"]})");
  });
  entered.wait();  // the request is being scored
  std::thread waiter([this] { server_->wait(); });
  server_->stop();
  waiter.join();
  const auto response = in_flight.get();
  ASSERT_EQ(response.result(), http::status::ok);
  EXPECT_EQ(rewards_of(response), std::vector<double>{9});
  EXPECT_FALSE(response.keep_alive());
  EXPECT_TRUE(idle.closed_by_server(1000ms));
  EXPECT_THROW(Connection(port_, 1000ms), std::runtime_error);
  server_->stop();  // idempotent
}

TEST_F(RewardServerTest, ServeUntilSignalStopsOnSigterm) {
  start();
  std::thread serving([this] { serve_until_signal(*server_); });
  // Raise only once the signal handler is installed; before that SIGTERM would kill the test.
  for (int i = 0; i < 500; ++i) {
    struct sigaction current {};
    sigaction(SIGTERM, nullptr, &current);
    if (current.sa_handler != SIG_DFL) break;
    std::this_thread::sleep_for(10ms);
  }
  expect_healthy();
  kill(getpid(), SIGTERM);
  serving.join();
  EXPECT_THROW(Connection(port_, 1000ms), std::runtime_error);
}

TEST_F(RewardServerTest, ServeUntilSignalReturnsWhenStoppedElsewhere) {
  start();
  std::thread serving([this] { serve_until_signal(*server_); });
  server_->stop();
  serving.join();  // would hang if serve_until_signal only woke on signals
  SUCCEED();
}

TEST(RewardServer, ReportsBindFailures) {
  ServerOptions options;
  options.port = 0;
  RewardServer holder(options,
                      [](const std::vector<ScoreItem>& batch) { return std::vector<double>(batch.size()); });
  holder.start();
  options.port = holder.port();
  RewardServer clash(options,
                     [](const std::vector<ScoreItem>& batch) { return std::vector<double>(batch.size()); });
  try {
    clash.start();
    FAIL() << "a second server bound the same port";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot listen on 127.0.0.1:"), std::string::npos) << e.what();
  }
  options.n_io_threads = 0;
  EXPECT_THROW(RewardServer(options, [](const std::vector<ScoreItem>&) { return std::vector<double>(); }),
               Error);
}

// ---- client -------------------------------------------------------------------------------------------

TEST_F(RewardServerTest, ClientRoundTripsInChunks) {
  ServerOptions options;
  options.token = "tok";
  start(options);
  std::vector<ScoreItem> items;
  std::vector<double> expected;
  for (size_t i = 0; i < 1000; ++i) {
    items.push_back({std::string(i % 7, 'p'), std::string(i % 13, 'r')});
    expected.push_back(fake_reward(items.back()));
  }
  RewardClient client(url(), "tok", /*chunk=*/64);
  EXPECT_TRUE(client.healthy());
  EXPECT_EQ(client.score(items), expected);
  EXPECT_EQ(client.score({}), std::vector<double>{});
  const auto metrics = http_request(port_, http::verb::get, "/metrics", "", "tok").body();
  // 16 chunks of at most 64, plus the health check.
  EXPECT_NE(metrics.find("grm_rm_requests_total{code=\"200\"} 17\n"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("grm_rm_texts_scored_total 1000\n"), std::string::npos) << metrics;

  RewardClient no_token(url());
  try {
    no_token.score(items);
    FAIL() << "scored without the token";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("answered 401"), std::string::npos) << e.what();
  }
}

TEST_F(RewardServerTest, ClientReconnectsAfterServerRestart) {
  start();
  RewardClient client(fmt::format("http://127.0.0.1:{}", port_));
  const std::vector<ScoreItem> items = {{"", "abc"}, {"p", "q"}};
  EXPECT_EQ(client.score(items), (std::vector<double>{3, 1001}));
  server_->stop();  // also closes the client's kept-alive connection, which the next call must notice
  ServerOptions options;
  options.port = port_;
  RewardServer restarted(options, [](const std::vector<ScoreItem>& batch) {
    std::vector<double> rewards;
    for (const auto& item : batch) rewards.push_back(-fake_reward(item));
    return rewards;
  });
  restarted.start();
  EXPECT_EQ(client.score(items), (std::vector<double>{-3, -1001}));
  EXPECT_TRUE(client.healthy());
  restarted.stop();
  EXPECT_FALSE(client.healthy());
}

// ---- load generator -----------------------------------------------------------------------------------

TEST_F(RewardServerTest, LoadTestCountsAnswersAndRefusesRemoteHosts) {
  start();
  const auto result = run_load_test(url(), /*n_requests=*/300, /*concurrency=*/8, /*texts_per_request=*/3);
  EXPECT_EQ(result.n_succeeded, 300);
  EXPECT_EQ(result.n_failures, 0);
  EXPECT_FALSE(result.hit_time_limit);
  EXPECT_GT(result.requests_per_second, 0);
  EXPECT_LE(result.p50_ms, result.p99_ms);
  const auto sizes = batch_sizes();
  EXPECT_EQ(std::accumulate(sizes.begin(), sizes.end(), size_t{0}), size_t{900});
  EXPECT_THROW(run_load_test("http://10.1.2.3:5000/get_reward", 10, 1, 1), Error);
  // Nothing listening: every request fails, quickly, and is counted.
  server_->stop();
  const auto refused = run_load_test(url(), 20, 4, 1);
  EXPECT_EQ(refused.n_failures, 20);
  EXPECT_EQ(refused.n_succeeded, 0);
}

}  // namespace
}  // namespace grm
