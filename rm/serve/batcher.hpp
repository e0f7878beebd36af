// Dynamic batching for reward serving: requests from many connections are queued here, and one thread
// cuts the queue into batches of at most max_batch items for the scorer. A batch goes out when it is full
// or when its oldest item has waited max_wait_ms; a request larger than max_batch is split across
// batches and answered once its last item is scored. Every queued request gets a fair share of each batch
// (max_batch / requests, what a small request leaves going to the others), so a request is answered
// within ceil(items / share) batches however large the others are. A batch that fails is scored again
// request by request, so only the request whose text fails gets the error. Knows nothing of HTTP.
//
// May include: rm/serve/score_item.hpp and the standard library.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "rm/serve/score_item.hpp"

namespace grm {

class RewardBatcher {
 public:
  // Called exactly once per submitted request, on the batching thread: the rewards in item order, or an
  // empty vector and the scorer's error message. Must not block; post the work elsewhere instead.
  using Done = std::function<void(std::vector<double> rewards, std::string error)>;
  // Sees each batch's size and whether scoring it failed (for metrics); called on the batching thread.
  using BatchObserver = std::function<void(size_t n_items, bool failed)>;

  RewardBatcher(BatchScorer scorer, int max_batch, int max_wait_ms, BatchObserver observer = {});
  ~RewardBatcher();  // stop()
  RewardBatcher(const RewardBatcher&) = delete;
  RewardBatcher& operator=(const RewardBatcher&) = delete;

  // Queues a request. Thread-safe. An empty request, or any after stop(), is answered at once on the
  // calling thread.
  void submit(std::vector<ScoreItem> items, Done done);
  // Scores everything already queued, without waiting for fuller batches, then joins the thread.
  void stop();

 private:
  struct Request {
    std::vector<ScoreItem> items;
    std::vector<double> rewards;
    size_t n_taken = 0;  // items already moved into a batch
    std::chrono::steady_clock::time_point queued_at;
    Done done;
  };
  struct Slice {  // items [begin, end) of one request, at [offset, offset + end - begin) in the batch
    std::shared_ptr<Request> request;
    size_t begin, end, offset;
  };

  void run();
  // The scorer's rewards for `batch`, or its error message ("" when it succeeded).
  std::string score(const std::vector<ScoreItem>& batch, std::vector<double>& rewards);
  std::vector<Slice> take_batch(std::vector<ScoreItem>& batch);  // under mutex_
  void finish_batch(const std::vector<Slice>& slices, const std::vector<double>& rewards,
                    const std::string& error);

  BatchScorer scorer_;
  size_t max_batch_;
  std::chrono::milliseconds max_wait_;
  BatchObserver observer_;

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<Request>> queue_;
  size_t n_queued_items_ = 0;  // items in queue_ not yet taken
  bool stopping_ = false;
  std::mutex stop_mutex_;  // serialises stop() callers so each returns only after the join
  std::thread thread_;
};

}  // namespace grm
