#include "rm/serve/batcher.hpp"

#include <algorithm>
#include <exception>
#include <iterator>

#include "core/error.hpp"

namespace grm {

RewardBatcher::RewardBatcher(BatchScorer scorer, int max_batch, int max_wait_ms, BatchObserver observer)
    : scorer_(std::move(scorer)),
      max_batch_(static_cast<size_t>(max_batch)),
      max_wait_(max_wait_ms),
      observer_(std::move(observer)) {
  if (!scorer_) fail("reward batcher needs a scorer");
  if (max_batch < 1) fail("max_batch must be at least 1, got {}", max_batch);
  if (max_wait_ms < 0) fail("max_wait_ms must not be negative, got {}", max_wait_ms);
  thread_ = std::thread([this] { run(); });
}

RewardBatcher::~RewardBatcher() {
  stop();
}

void RewardBatcher::submit(std::vector<ScoreItem> items, Done done) {
  if (items.empty()) {
    done({}, "");
    return;
  }
  auto request = std::make_shared<Request>();
  request->rewards.resize(items.size());
  request->items = std::move(items);
  request->queued_at = std::chrono::steady_clock::now();
  request->done = std::move(done);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!stopping_) {
      n_queued_items_ += request->items.size();
      queue_.push_back(std::move(request));
      wake_.notify_one();
      return;
    }
  }
  request->done({}, "reward server is shutting down");
}

void RewardBatcher::stop() {
  std::lock_guard<std::mutex> stop_lock(stop_mutex_);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  if (thread_.joinable()) thread_.join();
}

void RewardBatcher::run() {
  std::vector<ScoreItem> batch;
  std::vector<double> rewards;
  for (;;) {
    std::vector<Slice> slices;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and everything queued has been answered
      // Measured from the oldest request, so time spent scoring the previous batch counts as waiting:
      // under load, batches go out back to back instead of idling max_wait each.
      const auto deadline = queue_.front()->queued_at + max_wait_;
      wake_.wait_until(lock, deadline, [&] { return stopping_ || n_queued_items_ >= max_batch_; });
      slices = take_batch(batch);
    }
    std::string error;
    try {
      rewards = scorer_(batch);
      if (rewards.size() != batch.size()) {
        error =
            fmt::format("scorer returned {} rewards for a batch of {} texts", rewards.size(), batch.size());
      }
    } catch (const std::exception& e) {
      error = fmt::format("scoring failed: {}", e.what());
    } catch (...) {
      error = "scoring failed with an unknown exception";
    }
    if (observer_) observer_(batch.size(), !error.empty());
    finish_batch(slices, rewards, error);
    batch.clear();
  }
}

std::vector<RewardBatcher::Slice> RewardBatcher::take_batch(std::vector<ScoreItem>& batch) {
  std::vector<Slice> slices;
  while (batch.size() < max_batch_ && !queue_.empty()) {
    const auto& request = queue_.front();
    const size_t begin = request->n_taken;
    const size_t end = std::min(request->items.size(), begin + (max_batch_ - batch.size()));
    slices.push_back({request, begin, end, batch.size()});
    // Each item is scored exactly once, so the strings can move instead of being copied.
    std::move(request->items.begin() + begin, request->items.begin() + end, std::back_inserter(batch));
    request->n_taken = end;
    n_queued_items_ -= end - begin;
    if (end == request->items.size()) queue_.pop_front();
  }
  return slices;
}

void RewardBatcher::finish_batch(const std::vector<Slice>& slices, const std::vector<double>& rewards,
                                 const std::string& error) {
  for (const auto& slice : slices) {
    Request& request = *slice.request;
    if (!error.empty()) {
      // A request split across batches fails as a whole: drop its untaken rest from the queue, where it
      // can only sit at the front.
      if (request.n_taken < request.items.size()) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!queue_.empty() && queue_.front() == slice.request) {
          n_queued_items_ -= request.items.size() - request.n_taken;
          queue_.pop_front();
        }
      }
      request.done({}, error);
      continue;
    }
    std::copy(rewards.begin() + slice.offset, rewards.begin() + slice.offset + (slice.end - slice.begin),
              request.rewards.begin() + slice.begin);
    if (slice.end == request.items.size()) request.done(std::move(request.rewards), "");
  }
}

}  // namespace grm
