/*
 * binmx runtime: the engine's own thread pool (docs/design.md, "Runtime").
 *
 * A model with `threads` = T owns T - 1 worker threads. A run installs the pool as its thread's
 * ParallelRunner (src/xnor_gemm/parallel.h), so every ParallelFor of the core kernels and of the
 * runtime's own ops runs on it. Between two jobs the workers spin (a pause loop) for up to
 * kSpinMicros before they sleep on a condition variable: the ~40 short parallel layers of a
 * batch-1 forward then find them awake, without any environment variable (libgomp puts its
 * threads to sleep between MXNet's operators).
 *
 * One job at a time. One atomic word holds (generation << 32 | next chunk); a job's function
 * and chunk count sit in one of two slots (generation % 2), written before the word publishes
 * the generation. A thread claims chunk c of generation g by a compare-and-swap from (g, c) to
 * (g, c + 1), so a worker that wakes late, after its generation finished, claims nothing; the
 * caller waits only for the chunks that were claimed to finish, never for a worker that is
 * asleep or descheduled. A run that finds the pool busy (another thread running the same
 * model) gets a one-thread runner instead.
 */
#ifndef BINMX_RT_THREAD_POOL_H_
#define BINMX_RT_THREAD_POOL_H_

#include <atomic>
#include <cstdint>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "parallel.h"

namespace binmx {
namespace rt {

class SpinPool : public ParallelRunner {
 public:
  static constexpr int kSpinMicros = 2000;

  explicit SpinPool(int threads);
  ~SpinPool() override;
  SpinPool(const SpinPool&) = delete;
  SpinPool& operator=(const SpinPool&) = delete;

  int MaxThreads() const override { return threads_; }
  void RunChunks(int n_chunks, const std::function<void(int chunk)>& chunk) override;

  // One run at a time owns the pool: TryAcquire is false while another run holds it.
  bool TryAcquire() { return !busy_.exchange(true, std::memory_order_acquire); }
  void Release() { busy_.store(false, std::memory_order_release); }

 private:
  struct Slot {
    std::atomic<const std::function<void(int)>*> fn{nullptr};
    std::atomic<int> n_chunks{0};
  };
  void WorkerLoop();
  // Claims and runs chunks of generation `gen` until none is left.
  void RunChunksOf(uint32_t gen);

  const int threads_;
  std::vector<std::thread> workers_;
  std::atomic<bool> busy_{false};
  std::atomic<uint64_t> state_{0};  // generation << 32 | next chunk
  Slot slots_[2];
  std::atomic<int> done_{0};  // chunks of the current job that finished
  std::atomic<int> sleepers_{0};
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::condition_variable cv_;
};

// A runner that runs every chunk on the caller (one thread): ParallelFor with it never starts
// OpenMP threads.
class InlineRunner : public ParallelRunner {
 public:
  int MaxThreads() const override { return 1; }
  void RunChunks(int n_chunks, const std::function<void(int chunk)>& chunk) override {
    for (int c = 0; c < n_chunks; ++c) chunk(c);
  }
};

// Installs a runner on the calling thread for the lifetime of the object.
class ScopedRunner {
 public:
  explicit ScopedRunner(ParallelRunner* runner) : previous_(SetThreadParallelRunner(runner)) {}
  ~ScopedRunner() { SetThreadParallelRunner(previous_); }
  ScopedRunner(const ScopedRunner&) = delete;
  ScopedRunner& operator=(const ScopedRunner&) = delete;

 private:
  ParallelRunner* previous_;
};

}  // namespace rt
}  // namespace binmx

#endif  // BINMX_RT_THREAD_POOL_H_
