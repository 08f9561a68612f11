#pragma once
/// \file
/// The background producer of iat::data's loaders: one thread runs `produce(i)` for i in [first, count)
/// into a bounded queue; the consumer takes items in order. Exceptions in the worker reach the consumer
/// (rethrown by next(), after the items produced before them); destruction stops and joins the thread.
/// Also the seed mixing that makes every epoch's order and augmentation a pure function of (seed, epoch).

#include <ATen/CPUGeneratorImpl.h>
#include <torch/types.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <utility>

namespace iat {
namespace detail {

/// SplitMix64's finaliser: a bijective mixing of 64 bits.
inline uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

/// A seed derived from a user seed and up to three coordinates (stream tag, epoch, batch).
inline uint64_t mix_seed(uint64_t seed, uint64_t a, uint64_t b = 0, uint64_t c = 0) {
  return splitmix64(splitmix64(splitmix64(splitmix64(seed) ^ a) ^ b) ^ c);
}

/// A fresh CPU generator with the given seed.
inline at::Generator cpu_generator(uint64_t seed) { return at::detail::createCPUGenerator(seed); }

/// Runs `produce(i)` for i = first … count−1 on a background thread, at most `capacity` items ahead of
/// the consumer.
template <typename T>
class Prefetcher {
 public:
  Prefetcher(int64_t first, int64_t count, size_t capacity, std::function<T(int64_t)> produce)
      : capacity_(capacity < 1 ? 1 : capacity), produce_(std::move(produce)) {
    thread_ = std::thread([this, first, count] { run(first, count); });
  }
  Prefetcher(const Prefetcher&) = delete;
  Prefetcher& operator=(const Prefetcher&) = delete;
  ~Prefetcher() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  /// The next item in order; false once all are consumed. Rethrows the worker's exception.
  bool next(T* out) {
    std::unique_lock<std::mutex> lock(mutex_);
    cv_.wait(lock, [this] { return !queue_.empty() || finished_; });
    if (!queue_.empty()) {
      *out = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      cv_.notify_all();
      return true;
    }
    if (error_) {
      auto e = error_;
      error_ = nullptr;
      std::rethrow_exception(e);
    }
    return false;
  }

 private:
  void run(int64_t first, int64_t count) {
    torch::NoGradGuard no_grad;  // grad mode is thread-local: batches never carry history
    try {
      for (int64_t i = first; i < count; ++i) {
        {
          std::unique_lock<std::mutex> lock(mutex_);
          cv_.wait(lock, [this] { return queue_.size() < capacity_ || stop_; });
          if (stop_) break;
        }
        T item = produce_(i);
        {
          std::lock_guard<std::mutex> lock(mutex_);
          queue_.push_back(std::move(item));
        }
        cv_.notify_all();
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      error_ = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      finished_ = true;
    }
    cv_.notify_all();
  }

  size_t capacity_;
  std::function<T(int64_t)> produce_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<T> queue_;
  bool stop_ = false;
  bool finished_ = false;
  std::exception_ptr error_;
  std::thread thread_;  // last: starts after every other member exists
};

}  // namespace detail
}  // namespace iat
