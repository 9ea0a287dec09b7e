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
 * One job at a time: a job is published by bumping a generation counter; each worker runs
 * chunks until none is left, then counts itself done; RunChunks returns when every chunk and
 * every worker is done, so no worker touches a job after it returned. A run that finds the pool
 * busy (another thread running the same model) gets a one-thread runner instead.
 */
#ifndef BINMX_RT_THREAD_POOL_H_
#define BINMX_RT_THREAD_POOL_H_

#include <atomic>
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
  void WorkerLoop();
  void RunMyShare();

  const int threads_;
  std::vector<std::thread> workers_;
  std::atomic<bool> busy_{false};
  // The current job (valid while a RunChunks is in progress).
  const std::function<void(int)>* job_ = nullptr;
  int n_chunks_ = 0;
  std::atomic<int> next_{0};
  std::atomic<int> workers_done_{0};
  std::atomic<unsigned long long> generation_{0};
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
