// binmx runtime: SpinPool (see thread_pool.h).
#include "thread_pool.h"

#include <chrono>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define BINMX_RT_PAUSE() _mm_pause()
#elif defined(__aarch64__)
#define BINMX_RT_PAUSE() __asm__ __volatile__("yield")
#else
#define BINMX_RT_PAUSE() ((void)0)
#endif

namespace binmx {
namespace rt {

SpinPool::SpinPool(int threads) : threads_(threads < 1 ? 1 : threads) {
  workers_.reserve(threads_ - 1);
  for (int i = 1; i < threads_; ++i) workers_.emplace_back([this] { WorkerLoop(); });
}

SpinPool::~SpinPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true);
    generation_.fetch_add(1);
  }
  cv_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void SpinPool::RunMyShare() {
  const std::function<void(int)>& job = *job_;
  for (;;) {
    const int c = next_.fetch_add(1, std::memory_order_relaxed);
    if (c >= n_chunks_) break;
    job(c);
  }
}

void SpinPool::WorkerLoop() {
  unsigned long long seen = 0;
  for (;;) {
    unsigned long long gen = generation_.load(std::memory_order_acquire);
    if (gen == seen) {
      // Spin for a while, then sleep until the next job.
      const auto start = std::chrono::steady_clock::now();
      int iter = 0;
      while ((gen = generation_.load(std::memory_order_acquire)) == seen) {
        BINMX_RT_PAUSE();
        if (++iter % 256 == 0 && std::chrono::steady_clock::now() - start >
                                     std::chrono::microseconds(kSpinMicros)) {
          std::unique_lock<std::mutex> lock(mu_);
          sleepers_.fetch_add(1);
          cv_.wait(lock, [&] { return generation_.load() != seen; });
          sleepers_.fetch_sub(1);
          gen = generation_.load();
          break;
        }
      }
    }
    seen = gen;
    if (stop_.load()) return;
    RunMyShare();
    workers_done_.fetch_add(1, std::memory_order_acq_rel);
  }
}

void SpinPool::RunChunks(int n_chunks, const std::function<void(int chunk)>& chunk) {
  if (workers_.empty() || n_chunks <= 1) {
    for (int c = 0; c < n_chunks; ++c) chunk(c);
    return;
  }
  job_ = &chunk;
  n_chunks_ = n_chunks;
  next_.store(0, std::memory_order_relaxed);
  workers_done_.store(0, std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_seq_cst);  // publishes the job
  if (sleepers_.load(std::memory_order_seq_cst) > 0) {
    std::lock_guard<std::mutex> lock(mu_);
    cv_.notify_all();
  }
  RunMyShare();
  const int workers = static_cast<int>(workers_.size());
  while (workers_done_.load(std::memory_order_acquire) < workers) BINMX_RT_PAUSE();
  job_ = nullptr;
}

}  // namespace rt
}  // namespace binmx
