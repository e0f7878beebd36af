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
    std::string error = score(batch, rewards);
    if (error.empty() || slices.size() == 1) {
      finish_batch(slices, rewards, error);
    } else {
      // One request's bad text must not fail the others that shared its batch: score each alone.
      for (const auto& slice : slices) {
        std::vector<ScoreItem> alone(
            std::make_move_iterator(batch.begin() + long(slice.offset)),
            std::make_move_iterator(batch.begin() + long(slice.offset + slice.end - slice.begin)));
        std::vector<double> alone_rewards;
        std::string alone_error = score(alone, alone_rewards);
        finish_batch({Slice{slice.request, slice.begin, slice.end, 0}}, alone_rewards, alone_error);
      }
    }
    batch.clear();
  }
}

std::string RewardBatcher::score(const std::vector<ScoreItem>& batch, std::vector<double>& rewards) {
  std::string error;
  try {
    rewards = scorer_(batch);
    if (rewards.size() != batch.size())
      error = fmt::format("scorer returned {} rewards for a batch of {} texts", rewards.size(), batch.size());
  } catch (const std::exception& e) {
    error = fmt::format("scoring failed: {}", e.what());
  } catch (...) {
    error = "scoring failed with an unknown exception";
  }
  if (observer_) observer_(batch.size(), !error.empty());
  return error;
}

// Fair shares: every queued request gets an equal part of the batch (a request needing less gives the
// rest to the others), so one client's huge request cannot hold the model while a one-text request waits.
// Each request's part is one contiguous run of its items, in submission order within the batch.
std::vector<RewardBatcher::Slice> RewardBatcher::take_batch(std::vector<ScoreItem>& batch) {
  std::vector<size_t> share(queue_.size(), 0);
  std::vector<size_t> by_need(queue_.size());
  for (size_t i = 0; i < queue_.size(); ++i) by_need[i] = i;
  auto remaining = [&](size_t i) { return queue_[i]->items.size() - queue_[i]->n_taken; };
  std::stable_sort(by_need.begin(), by_need.end(),
                   [&](size_t a, size_t b) { return remaining(a) < remaining(b); });
  size_t capacity = max_batch_;
  for (size_t k = 0; k < by_need.size() && capacity > 0; ++k) {
    size_t left = by_need.size() - k;  // requests still to be given a share
    size_t fair = std::max<size_t>(1, capacity / left);
    size_t i = by_need[k];
    share[i] = std::min({remaining(i), fair, capacity});
    capacity -= share[i];
  }
  std::vector<Slice> slices;
  for (size_t i = 0; i < queue_.size(); ++i) {
    if (share[i] == 0) continue;
    const auto& request = queue_[i];
    const size_t begin = request->n_taken, end = begin + share[i];
    slices.push_back({request, begin, end, batch.size()});
    // Each item is scored exactly once, so the strings can move instead of being copied.
    std::move(request->items.begin() + begin, request->items.begin() + end, std::back_inserter(batch));
    request->n_taken = end;
    n_queued_items_ -= end - begin;
  }
  queue_.erase(std::remove_if(queue_.begin(), queue_.end(),
                              [](const auto& r) { return r->n_taken == r->items.size(); }),
               queue_.end());
  return slices;
}

void RewardBatcher::finish_batch(const std::vector<Slice>& slices, const std::vector<double>& rewards,
                                 const std::string& error) {
  for (const auto& slice : slices) {
    Request& request = *slice.request;
    if (!error.empty()) {
      // A request split across batches fails as a whole: drop its untaken rest from the queue.
      if (request.n_taken < request.items.size()) {
        std::lock_guard<std::mutex> lock(mutex_);
        auto queued = std::find(queue_.begin(), queue_.end(), slice.request);
        if (queued != queue_.end()) {
          n_queued_items_ -= request.items.size() - request.n_taken;
          request.n_taken = request.items.size();
          queue_.erase(queued);
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
