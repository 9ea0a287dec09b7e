/*
 * binmx core: ParallelFor on OpenMP (see parallel.h).
 *
 * The work runs on the OpenMP runtime that MXNet itself uses (libgomp), not on a pool of our
 * own: MXNet's operators leave their OpenMP threads spinning for a while after each parallel
 * region, so a second, private pool had to fight them for the same cores (measured: a binary
 * layer's training step at 2 threads was no faster than at 1 while libgomp spun on the other
 * core). Sharing the runtime, our chunks run on the very threads that are spinning.
 *
 * A job is (fn, n_tasks, n_chunks) with n_chunks = min(n_tasks, kChunksPerThread * threads);
 * chunk c covers [c * n / n_chunks, (c + 1) * n / n_chunks). The team's threads claim chunks
 * through an atomic counter, so a thread that starts late (a busy core) hands its share to the
 * others; the chunk boundaries depend only on (n_tasks, threads), never on the schedule.
 * The first exception thrown by fn is rethrown on the calling thread after the region.
 * In a fork()ed child every call runs inline on the calling thread (see g_forked_child).
 */
#include "parallel.h"

#include <omp.h>
#include <pthread.h>

#include <atomic>
#include <exception>
#include <mutex>

#include "xnor_gemm.h"

namespace binmx {

namespace {

constexpr int kMaxThreads = 256;
// Chunks per thread: with a few chunks each, a thread that runs late hands its share to the
// others instead of holding up the whole call.
constexpr int kChunksPerThread = 4;

// True on a thread while it runs chunks of a job: nested ParallelFor calls then run inline.
thread_local bool t_in_parallel = false;
// The calling thread's own executor, if it installed one (SetThreadParallelRunner).
thread_local ParallelRunner* t_runner = nullptr;

// GNU libgomp cannot start a team in a fork()ed child of a process that already ran one (the
// parent's pool threads do not exist there; the region waits for them forever). A child
// therefore runs every ParallelFor inline, as MXNet does for its own operators after fork.
std::atomic<bool> g_forked_child{false};
void MarkForkedChild() { g_forked_child.store(true); }
const bool g_atfork_registered = [] {
  return pthread_atfork(nullptr, nullptr, &MarkForkedChild) == 0;
}();

void RunChunks(int64_t n_tasks, int n_chunks, std::atomic<int>* next,
               const std::function<void(int64_t, int64_t)>& fn, std::mutex* error_mu,
               std::exception_ptr* error) {
  const bool was_inside = t_in_parallel;
  t_in_parallel = true;
  for (;;) {
    const int c = next->fetch_add(1, std::memory_order_relaxed);
    if (c >= n_chunks) break;
    try {
      fn(n_tasks * c / n_chunks, n_tasks * (c + 1) / n_chunks);
    } catch (...) {
      std::lock_guard<std::mutex> lock(*error_mu);
      if (!*error) *error = std::current_exception();
    }
  }
  t_in_parallel = was_inside;
}

}  // namespace

ParallelRunner* SetThreadParallelRunner(ParallelRunner* runner) {
  ParallelRunner* previous = t_runner;
  t_runner = runner;
  return previous;
}

void ParallelFor(int64_t n_tasks, int threads,
                 const std::function<void(int64_t begin, int64_t end)>& fn) {
  if (n_tasks <= 0) return;
  if (threads <= 0) threads = DefaultThreads();
  if (threads > kMaxThreads) threads = kMaxThreads;
  ParallelRunner* runner = t_in_parallel ? nullptr : t_runner;
  if (runner != nullptr && threads > runner->MaxThreads()) threads = runner->MaxThreads();
  if (threads == 1 || n_tasks == 1 || g_forked_child.load(std::memory_order_relaxed)) {
    fn(0, n_tasks);
    return;
  }
  const int64_t max_chunks = static_cast<int64_t>(threads) * kChunksPerThread;
  const int n_chunks = static_cast<int>(n_tasks < max_chunks ? n_tasks : max_chunks);
  if (t_in_parallel || omp_in_parallel()) {
    // Nested call (from inside a task, or from someone else's parallel region): the same
    // chunks, run here in order.
    for (int c = 0; c < n_chunks; ++c) fn(n_tasks * c / n_chunks, n_tasks * (c + 1) / n_chunks);
    return;
  }
  std::atomic<int> next{0};
  std::mutex error_mu;
  std::exception_ptr error;
  if (runner != nullptr) {
    runner->RunChunks(n_chunks, [&](int c) {
      const bool was_inside = t_in_parallel;
      t_in_parallel = true;
      try {
        fn(n_tasks * c / n_chunks, n_tasks * (c + 1) / n_chunks);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mu);
        if (!error) error = std::current_exception();
      }
      t_in_parallel = was_inside;
    });
    if (error) std::rethrow_exception(error);
    return;
  }
  const int team = threads < n_chunks ? threads : n_chunks;
#pragma omp parallel num_threads(team)
  RunChunks(n_tasks, n_chunks, &next, fn, &error_mu, &error);
  if (error) std::rethrow_exception(error);
}

}  // namespace binmx
