// The HTTP side of reward serving: acceptor, per-connection sessions, routing, auth, metrics and
// graceful stop. Scoring itself goes through RewardBatcher; the wire format through reward_protocol.
#include "rm/serve/server.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "core/error.hpp"
#include "core/log.hpp"
#include "rm/serve/batcher.hpp"
#include "rm/serve/protocol.hpp"

namespace grm {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using Response = http::response<http::string_body>;

// A Prometheus histogram with fixed upper bounds; the caller holds the lock.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1) {}

  void observe(double value) {
    ++counts_[std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin()];
    sum_ += value;
  }

  void render(std::string& out, std::string_view name, std::string_view help) const {
    out += fmt::format("# HELP {} {}\n# TYPE {} histogram\n", name, help, name);
    uint64_t cumulative = 0;
    for (size_t i = 0; i < bounds_.size(); ++i) {
      cumulative += counts_[i];
      out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, bounds_[i], cumulative);
    }
    cumulative += counts_.back();
    out += fmt::format("{}_bucket{{le=\"+Inf\"}} {}\n{}_sum {}\n{}_count {}\n", name, cumulative, name, sum_,
                       name, cumulative);
  }

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // counts_[i]: values in (bounds_[i-1], bounds_[i]]; last: above all
  double sum_ = 0;
};

class ServerMetrics {
 public:
  void count_response(int code) {
    std::lock_guard<std::mutex> lock(mutex_);
    ++responses_[code];
  }
  void count_dropped_connection() {
    std::lock_guard<std::mutex> lock(mutex_);
    ++n_dropped_connections_;
  }
  void observe_latency(double seconds) {
    std::lock_guard<std::mutex> lock(mutex_);
    latency_.observe(seconds);
  }
  void observe_batch(size_t n_items, bool failed) {
    std::lock_guard<std::mutex> lock(mutex_);
    batch_size_.observe(static_cast<double>(n_items));
    if (failed) {
      ++n_scorer_errors_;
    } else {
      n_texts_scored_ += n_items;
    }
  }

  std::string render(size_t n_open_connections) const {
    std::lock_guard<std::mutex> lock(mutex_);
    std::string out =
        "# HELP grm_rm_requests_total HTTP responses sent, by status code.\n"
        "# TYPE grm_rm_requests_total counter\n";
    for (const auto& [code, count] : responses_) {
      out += fmt::format("grm_rm_requests_total{{code=\"{}\"}} {}\n", code, count);
    }
    out += fmt::format(
        "# HELP grm_rm_scorer_errors_total Batches whose scoring threw; their requests got 500.\n"
        "# TYPE grm_rm_scorer_errors_total counter\ngrm_rm_scorer_errors_total {}\n"
        "# HELP grm_rm_connection_errors_total Connections dropped without an answer: timeouts, resets.\n"
        "# TYPE grm_rm_connection_errors_total counter\ngrm_rm_connection_errors_total {}\n"
        "# HELP grm_rm_texts_scored_total Texts scored successfully.\n"
        "# TYPE grm_rm_texts_scored_total counter\ngrm_rm_texts_scored_total {}\n"
        "# HELP grm_rm_open_connections Client connections currently open.\n"
        "# TYPE grm_rm_open_connections gauge\ngrm_rm_open_connections {}\n",
        n_scorer_errors_, n_dropped_connections_, n_texts_scored_, n_open_connections);
    batch_size_.render(out, "grm_rm_batch_size", "Texts per scorer call.");
    latency_.render(out, "grm_rm_request_duration_seconds",
                    "Time from a /get_reward request's headers to its answer, queueing included.");
    return out;
  }

 private:
  mutable std::mutex mutex_;
  std::map<int, uint64_t> responses_;
  uint64_t n_scorer_errors_ = 0;
  uint64_t n_dropped_connections_ = 0;
  uint64_t n_texts_scored_ = 0;
  Histogram batch_size_{{1, 2, 4, 8, 16, 32, 64, 128, 256, 512}};
  Histogram latency_{{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}};
};

// Compares every byte of the expected token whatever the candidate holds, so response timing does not
// reveal how long a matching prefix an attacker has guessed.
bool token_matches(std::string_view candidate, std::string_view expected) {
  unsigned diff = candidate.size() != expected.size() ? 1 : 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    const unsigned char given = i < candidate.size() ? static_cast<unsigned char>(candidate[i]) : 0;
    diff |= given ^ static_cast<unsigned char>(expected[i]);
  }
  return diff == 0;
}

// The token from "Authorization: Bearer <token>" (scheme case-insensitive), or "" when absent.
std::string_view bearer_token(beast::string_view header) {
  const beast::string_view scheme = "bearer ";
  if (header.size() < scheme.size() || !beast::iequals(header.substr(0, scheme.size()), scheme)) return {};
  std::string_view token(header.data() + scheme.size(), header.size() - scheme.size());
  while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
  while (!token.empty() && token.back() == ' ') token.remove_suffix(1);
  return token;
}

struct Route {
  std::string_view path;
  http::verb method;
  bool needs_token;
};
// /health is open so launchers and load balancers can poll it without the secret.
constexpr Route kRoutes[] = {
    {"/get_reward", http::verb::post, true},
    {"/health", http::verb::get, false},
    {"/metrics", http::verb::get, true},
};

Response make_response(http::status status, std::string body, unsigned version,
                       std::string_view content_type = "application/json") {
  Response response{status, version};
  response.set(http::field::server, "grm");
  response.set(http::field::content_type, beast::string_view(content_type.data(), content_type.size()));
  response.body() = std::move(body);
  return response;
}

Response error_response(http::status status, std::string_view message, unsigned version) {
  return make_response(status, encode_error(message), version);
}

class Session;

// Everything the sessions share. Outlives them: stop() waits until every session has ended.
class ServerCore {
 public:
  ServerCore(ServerOptions options, BatchScorer scorer)
      : options_(std::move(options)), scorer_(std::move(scorer)) {
    if (!scorer_) fail("reward server needs a scorer");
    if (options_.port < 0 || options_.port > 65535) fail("port must be in 0..65535, got {}", options_.port);
    if (options_.n_io_threads < 1) fail("n_io_threads must be at least 1, got {}", options_.n_io_threads);
    if (options_.read_timeout_ms < 1)
      fail("read_timeout_ms must be positive, got {}", options_.read_timeout_ms);
    if (options_.max_batch < 1) fail("max_batch must be at least 1, got {}", options_.max_batch);
    if (options_.max_wait_ms < 0) fail("max_wait_ms must not be negative, got {}", options_.max_wait_ms);
  }
  ~ServerCore() { stop(); }

  void start();
  void stop();
  void wait() {
    std::unique_lock<std::mutex> lock(state_mutex_);
    stopped_changed_.wait(lock, [&] { return stopped_; });
  }
  int port() const { return bound_port_; }

  const ServerOptions& options() const { return options_; }
  std::chrono::milliseconds read_timeout() const {
    return std::chrono::milliseconds(options_.read_timeout_ms);
  }
  bool stopping() const { return stopping_.load(); }
  ServerMetrics& metrics() { return metrics_; }
  RewardBatcher& batcher() { return *batcher_; }
  size_t n_sessions() {
    std::lock_guard<std::mutex> lock(sessions_mutex_);
    return sessions_.size();
  }

  void add_session(const std::shared_ptr<Session>& session) {
    std::lock_guard<std::mutex> lock(sessions_mutex_);
    sessions_.emplace(session.get(), session);
  }
  void remove_session(Session* session) {
    std::lock_guard<std::mutex> lock(sessions_mutex_);
    sessions_.erase(session);
    if (sessions_.empty()) sessions_changed_.notify_all();
  }

 private:
  void accept();
  void run_io();

  ServerOptions options_;
  BatchScorer scorer_;
  ServerMetrics metrics_;
  std::unique_ptr<RewardBatcher> batcher_;

  std::atomic<bool> stopping_{false};
  std::mutex sessions_mutex_;
  std::condition_variable sessions_changed_;
  std::unordered_map<Session*, std::weak_ptr<Session>> sessions_;

  std::mutex stop_mutex_;  // held for the whole of start() and stop()
  std::mutex state_mutex_;
  std::condition_variable stopped_changed_;
  bool started_ = false;
  bool stopped_ = false;

  // Last, so it is destroyed first, while everything a leftover handler might touch still exists.
  asio::io_context io_context_;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_;
  // The acceptor and its retry timer share a strand, so stop() can close them from another thread.
  asio::strand<asio::io_context::executor_type> accept_strand_{asio::make_strand(io_context_)};
  tcp::acceptor acceptor_{accept_strand_};
  asio::steady_timer accept_retry_{accept_strand_};
  std::vector<std::thread> io_threads_;
  int bound_port_ = 0;
};

// One client connection: reads a request (headers, then body), answers it, and repeats while the
// client keeps the connection alive. Every handler runs on the connection's strand.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, ServerCore& core) : stream_(std::move(socket)), core_(core) {}
  ~Session() { core_.remove_session(this); }

  void start() {
    asio::dispatch(stream_.get_executor(),
                   beast::bind_front_handler(&Session::read_request, shared_from_this()));
  }

  // Called from stop(): a connection idling between requests closes now; one with a request in hand
  // answers it first (with Connection: close).
  void on_server_stop() {
    asio::post(stream_.get_executor(), [self = shared_from_this()] {
      if (self->awaiting_request_) self->stream_.cancel();
    });
  }

 private:
  void read_request() {
    if (core_.stopping()) return close();
    parser_.emplace();
    parser_->body_limit(core_.options().max_body_bytes);
    awaiting_request_ = true;
    // One deadline for the whole request, headers and body: a client trickling bytes (slowloris) is
    // cut off when it expires instead of holding the connection forever.
    stream_.expires_after(core_.read_timeout());
    http::async_read_header(stream_, buffer_, *parser_,
                            beast::bind_front_handler(&Session::on_header, shared_from_this()));
  }

  void on_header(beast::error_code error, size_t) {
    awaiting_request_ = false;
    if (error) return on_read_error(error);
    received_at_ = Clock::now();
    const auto& request = parser_->get();
    const beast::string_view target = request.target();
    const std::string_view path(target.data(), std::min(target.find('?'), target.size()));
    route_ = nullptr;
    for (const auto& candidate : kRoutes) {
      if (candidate.path == path) route_ = &candidate;
    }
    std::optional<Response> rejection;
    if (!route_) {
      rejection =
          error_response(http::status::not_found,
                         fmt::format("no endpoint '{}'; try POST /get_reward, GET /health or GET /metrics",
                                     std::string(path.substr(0, 200))),
                         request.version());
    } else if (request.method() != route_->method) {
      rejection = error_response(
          http::status::method_not_allowed,
          fmt::format("{} needs {}", route_->path, std::string(http::to_string(route_->method))),
          request.version());
      rejection->set(http::field::allow, http::to_string(route_->method));
    } else if (route_->needs_token && !core_.options().token.empty() &&
               !token_matches(bearer_token(request[http::field::authorization]), core_.options().token)) {
      rejection = error_response(http::status::unauthorized,
                                 "missing or wrong bearer token: send 'Authorization: Bearer <token>'",
                                 request.version());
      rejection->set(http::field::www_authenticate, "Bearer");
    }
    if (rejection) {
      // The unread body, if any, would be taken for the next request, so such a connection closes.
      return respond(std::move(*rejection), request.keep_alive() && parser_->is_done());
    }
    if (parser_->is_done()) return handle_request();
    if (beast::iequals(request[http::field::expect], "100-continue")) {
      // curl and others wait for this before sending a large body.
      continue_ = http::response<http::empty_body>{http::status::continue_, request.version()};
      return http::async_write(stream_, continue_,
                               [self = shared_from_this()](beast::error_code error, size_t) {
                                 if (error) return self->on_read_error(error);
                                 self->read_body();
                               });
    }
    read_body();
  }

  void read_body() {
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code error, size_t) {
                       if (error) return self->on_read_error(error);
                       self->handle_request();
                     });
  }

  void on_read_error(beast::error_code error) {
    const unsigned version = parser_ && parser_->is_header_done() ? parser_->get().version() : 11;
    if (error == http::error::body_limit) {
      return respond(error_response(http::status::payload_too_large,
                                    fmt::format("request body exceeds the server's limit of {} bytes; send "
                                                "fewer texts per request",
                                                core_.options().max_body_bytes),
                                    version),
                     false);
    }
    if (error == http::error::header_limit) {
      return respond(error_response(http::status::request_header_fields_too_large,
                                    "request headers exceed the server's limit", version),
                     false);
    }
    // Any other parse error of Beast's, except the peer closing (cleanly or mid-message), is the
    // client's malformed request, and it deserves an answer saying so.
    if (&error.category() == &beast::error_code(http::error::bad_method).category() &&
        error != http::error::end_of_stream && error != http::error::partial_message) {
      return respond(error_response(http::status::bad_request,
                                    fmt::format("malformed HTTP request: {}", error.message()), version),
                     false);
    }
    // A clean close between requests, or stop() cancelling an idle read, is not an error.
    if (error != http::error::end_of_stream && error != asio::error::operation_aborted) {
      core_.metrics().count_dropped_connection();
    }
    close();
  }

  void handle_request() {
    const auto& request = parser_->get();
    if (route_->path == "/health") {
      return respond(make_response(http::status::ok, R"({"status":"ok"})", request.version()),
                     request.keep_alive());
    }
    if (route_->path == "/metrics") {
      return respond(make_response(http::status::ok, core_.metrics().render(core_.n_sessions()),
                                   request.version(), "text/plain; version=0.0.4"),
                     request.keep_alive());
    }
    std::vector<ScoreItem> items;
    try {
      items = parse_reward_request(request.body());
    } catch (const BadRequest& e) {
      return respond(error_response(http::status::bad_request, e.what(), request.version()),
                     request.keep_alive());
    }
    for (size_t i = 0; i < items.size(); ++i) {
      size_t bytes = items[i].prompt.size() + items[i].response.size();
      if (bytes > core_.options().max_text_bytes)
        return respond(
            error_response(http::status::payload_too_large,
                           fmt::format("text {} has {} bytes; this server takes at most {} per text "
                                       "(--max-text-bytes)",
                                       i, bytes, core_.options().max_text_bytes),
                           request.version()),
            request.keep_alive());
    }
    // The batching thread calls back; the answer is written from this connection's strand.
    core_.batcher().submit(
        std::move(items), [self = shared_from_this()](std::vector<double> rewards, std::string error) {
          asio::post(self->stream_.get_executor(),
                     [self, rewards = std::move(rewards), error = std::move(error)]() mutable {
                       self->on_scored(std::move(rewards), error);
                     });
        });
  }

  void on_scored(std::vector<double> rewards, const std::string& error) {
    const auto& request = parser_->get();
    core_.metrics().observe_latency(std::chrono::duration<double>(Clock::now() - received_at_).count());
    if (!error.empty()) {
      return respond(error_response(http::status::internal_server_error, error, request.version()),
                     request.keep_alive());
    }
    respond(make_response(http::status::ok, encode_rewards(rewards), request.version()),
            request.keep_alive());
  }

  void respond(Response response, bool keep_alive) {
    core_.metrics().count_response(response.result_int());
    response_ = std::move(response);
    response_.keep_alive(keep_alive && !core_.stopping());
    response_.prepare_payload();
    stream_.expires_after(core_.read_timeout());  // a client that stops reading cannot hold us either
    http::async_write(stream_, response_, [self = shared_from_this()](beast::error_code error, size_t) {
      if (error) {
        self->core_.metrics().count_dropped_connection();
        return self->close();
      }
      if (!self->response_.keep_alive()) return self->linger_then_close();
      self->read_request();
    });
  }

  // After an answer that ends the connection the client may still be sending (a refused body, say).
  // Closing with unread input makes the kernel send a reset, which can destroy the answer before the
  // client reads it; so half-close and discard input briefly first.
  void linger_then_close() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream_.expires_after(std::min(core_.read_timeout(), std::chrono::milliseconds(1000)));
    drain();
  }
  void drain() {
    stream_.async_read_some(asio::buffer(drain_buffer_),
                            [self = shared_from_this()](beast::error_code error, size_t) {
                              if (error) return self->close();
                              self->drain();
                            });
  }

  void close() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.socket().close(ignored);
  }

  beast::tcp_stream stream_;
  ServerCore& core_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  Response response_;
  http::response<http::empty_body> continue_;
  const Route* route_ = nullptr;   // of the request in hand, once its headers are read
  bool awaiting_request_ = false;  // reading headers of a request that may never come
  Clock::time_point received_at_;
  std::array<char, 4096> drain_buffer_;
};

void ServerCore::start() {
  std::lock_guard<std::mutex> stop_lock(stop_mutex_);
  if (started_) fail("reward server already started");
  const std::string where = fmt::format("{}:{}", options_.host, options_.port);
  beast::error_code error;
  tcp::resolver resolver(io_context_);
  const auto endpoints = resolver.resolve(options_.host, std::to_string(options_.port),
                                          tcp::resolver::numeric_service | tcp::resolver::passive, error);
  if (error || endpoints.empty())
    fail("cannot resolve reward server host '{}': {}", options_.host, error.message());
  const tcp::endpoint endpoint = endpoints.begin()->endpoint();
  acceptor_.open(endpoint.protocol(), error);
  // Lets a restarted server bind while connections of the previous one linger in TIME_WAIT.
  if (!error) acceptor_.set_option(asio::socket_base::reuse_address(true), error);
  if (!error) acceptor_.bind(endpoint, error);
  if (!error) acceptor_.listen(asio::socket_base::max_listen_connections, error);
  if (error) {
    beast::error_code ignored;
    acceptor_.close(ignored);
    fail("reward server cannot listen on {}: {}; is another server using the port? pick another --port",
         where, error.message());
  }
  bound_port_ = acceptor_.local_endpoint().port();
  batcher_ = std::make_unique<RewardBatcher>(
      scorer_, options_.max_batch, options_.max_wait_ms,
      [this](size_t n_items, bool failed) { metrics_.observe_batch(n_items, failed); });
  work_.emplace(io_context_.get_executor());
  asio::dispatch(accept_strand_, [this] { accept(); });
  for (int i = 0; i < options_.n_io_threads; ++i) io_threads_.emplace_back([this] { run_io(); });
  started_ = true;
}

void ServerCore::run_io() {
  // Handlers do not throw by design; should one (say, bad_alloc), log it and keep serving rather than
  // take the process down.
  for (;;) {
    try {
      io_context_.run();
      return;
    } catch (const std::exception& e) {
      log::error("reward server: unexpected error in a connection handler: {}", e.what());
    }
  }
}

void ServerCore::accept() {
  acceptor_.async_accept(asio::make_strand(io_context_), [this](beast::error_code error, tcp::socket socket) {
    if (stopping_ || !acceptor_.is_open()) return;
    if (error) {
      // Out of file descriptors and the like: retry shortly instead of spinning on the error.
      metrics_.count_dropped_connection();
      accept_retry_.expires_after(std::chrono::milliseconds(50));
      accept_retry_.async_wait([this](beast::error_code wait_error) {
        if (!wait_error && !stopping_) accept();
      });
      return;
    }
    beast::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);  // small JSON answers must not wait for Nagle
    auto session = std::make_shared<Session>(std::move(socket), *this);
    add_session(session);
    session->start();
    accept();
  });
}

void ServerCore::stop() {
  std::lock_guard<std::mutex> stop_lock(stop_mutex_);
  {
    std::lock_guard<std::mutex> lock(state_mutex_);
    if (stopped_) return;
  }
  if (started_) {
    stopping_ = true;
    asio::post(accept_strand_, [this] {
      beast::error_code ignored;
      acceptor_.close(ignored);
      accept_retry_.cancel();
    });
    std::vector<std::shared_ptr<Session>> live;
    {
      std::unique_lock<std::mutex> lock(sessions_mutex_);
      for (auto& [key, weak] : sessions_) {
        if (auto session = weak.lock()) live.push_back(std::move(session));
      }
    }
    for (const auto& session : live) session->on_server_stop();
    live.clear();  // a session must be able to end while we wait below
    {
      // Bounded: every session still open is reading under a deadline, writing under one, or waiting
      // for the scorer.
      std::unique_lock<std::mutex> lock(sessions_mutex_);
      sessions_changed_.wait(lock, [&] { return sessions_.empty(); });
    }
    work_.reset();
    for (auto& thread : io_threads_) thread.join();
    batcher_->stop();
  }
  std::lock_guard<std::mutex> lock(state_mutex_);
  stopped_ = true;
  stopped_changed_.notify_all();
}

}  // namespace

struct RewardServer::Impl : ServerCore {
  using ServerCore::ServerCore;
};

RewardServer::RewardServer(ServerOptions options, BatchScorer scorer)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(scorer))) {}
RewardServer::~RewardServer() = default;
int RewardServer::port() const {
  return impl_->port();
}
void RewardServer::start() {
  impl_->start();
}
void RewardServer::stop() {
  impl_->stop();
}
void RewardServer::wait() {
  impl_->wait();
}

void serve_until_signal(RewardServer& server) {
  asio::io_context signal_context;
  asio::signal_set signals(signal_context, SIGINT, SIGTERM);
  signals.async_wait([](beast::error_code, int) {});
  // Also return when the server is stopped some other way: the watcher wakes the signal loop.
  std::thread watcher([&] {
    server.wait();
    asio::post(signal_context, [&] { signals.cancel(); });
  });
  signal_context.run();  // returns once the one wait above has completed, by signal or cancel
  server.stop();
  watcher.join();
}

}  // namespace grm
