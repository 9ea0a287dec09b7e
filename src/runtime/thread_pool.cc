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

namespace {
inline uint32_t GenOf(uint64_t s) { return static_cast<uint32_t>(s >> 32); }
inline uint32_t ChunkOf(uint64_t s) { return static_cast<uint32_t>(s); }
}  // namespace

SpinPool::SpinPool(int threads) : threads_(threads < 1 ? 1 : threads) {
  workers_.reserve(threads_ - 1);
  for (int i = 1; i < threads_; ++i) workers_.emplace_back([this] { WorkerLoop(); });
}

SpinPool::~SpinPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true);
  }
  cv_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void SpinPool::RunChunksOf(uint32_t gen) {
  const Slot& slot = slots_[gen & 1];
  const std::function<void(int)>* fn = slot.fn.load(std::memory_order_acquire);
  const uint32_t n = static_cast<uint32_t>(slot.n_chunks.load(std::memory_order_acquire));
  uint64_t s = state_.load(std::memory_order_acquire);
  for (;;) {
    if (GenOf(s) != gen || ChunkOf(s) >= n) return;
    if (!state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel,
                                      std::memory_order_acquire)) {
      continue;  // s was reloaded
    }
    (*fn)(static_cast<int>(ChunkOf(s)));
    done_.fetch_add(1, std::memory_order_release);
    s = state_.load(std::memory_order_acquire);
  }
}

void SpinPool::WorkerLoop() {
  uint32_t seen = 0;
  for (;;) {
    uint64_t s = state_.load(std::memory_order_acquire);
    if (GenOf(s) == seen) {
      // Spin for a while, then sleep until the next job.
      const auto start = std::chrono::steady_clock::now();
      int iter = 0;
      while (GenOf(s = state_.load(std::memory_order_acquire)) == seen) {
        if (stop_.load(std::memory_order_relaxed)) return;
        BINMX_RT_PAUSE();
        if (++iter % 256 == 0 &&
            std::chrono::steady_clock::now() - start > std::chrono::microseconds(kSpinMicros)) {
          std::unique_lock<std::mutex> lock(mu_);
          sleepers_.fetch_add(1);
          cv_.wait(lock, [&] { return stop_.load() || GenOf(state_.load()) != seen; });
          sleepers_.fetch_sub(1);
          s = state_.load();
          break;
        }
      }
    }
    if (stop_.load()) return;
    seen = GenOf(s);
    RunChunksOf(seen);
  }
}

void SpinPool::RunChunks(int n_chunks, const std::function<void(int chunk)>& chunk) {
  if (workers_.empty() || n_chunks <= 1) {
    for (int c = 0; c < n_chunks; ++c) chunk(c);
    return;
  }
  const uint32_t gen = GenOf(state_.load(std::memory_order_relaxed)) + 1;
  Slot& slot = slots_[gen & 1];
  slot.fn.store(&chunk, std::memory_order_relaxed);
  slot.n_chunks.store(n_chunks, std::memory_order_relaxed);
  done_.store(0, std::memory_order_relaxed);
  state_.store(static_cast<uint64_t>(gen) << 32, std::memory_order_seq_cst);  // publishes
  if (sleepers_.load(std::memory_order_seq_cst) > 0) {
    std::lock_guard<std::mutex> lock(mu_);
    cv_.notify_all();
  }
  RunChunksOf(gen);
  while (done_.load(std::memory_order_acquire) < n_chunks) BINMX_RT_PAUSE();
}

}  // namespace rt
}  // namespace binmx
