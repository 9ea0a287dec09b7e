/*
 * binmx core: persistent thread pool behind ParallelFor (see parallel.h).
 *
 * One job at a time runs on the pool (call_mu_ serializes concurrent callers). A job is
 * (fn, n_tasks, n_chunks) with n_chunks = min(n_tasks, 4 * threads); chunk c covers
 * [c * n / n_chunks, (c + 1) * n / n_chunks).
 * Workers and the caller claim chunks through an atomic counter; the caller waits until all
 * claimed chunks are finished and every worker has left the job. Workers spin briefly after a job (back-to-back kernel calls
 * are common) and then sleep on a condition variable.
 */
#include "parallel.h"

#include <pthread.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "xnor_gemm.h"

namespace binmx {

namespace {

constexpr int kMaxThreads = 256;
// Chunks per thread: with a few chunks each, a thread that runs late (a busy core, a slow
// wake-up) hands its share to the others instead of holding up the whole call.
constexpr int kChunksPerThread = 4;

// True on a thread while it runs chunks of a job: nested ParallelFor calls then run inline.
thread_local bool t_in_parallel = false;

class ThreadPool {
 public:
  ~ThreadPool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    wake_.notify_all();
    for (std::thread& t : workers_) t.join();
  }

  void Run(int64_t n_tasks, int n_chunks, int helpers,
           const std::function<void(int64_t, int64_t)>& fn) {
    std::lock_guard<std::mutex> call_lock(call_mu_);
    EnsureWorkers(helpers);
    {
      std::lock_guard<std::mutex> lock(mu_);
      fn_ = &fn;
      n_tasks_ = n_tasks;
      n_chunks_ = n_chunks;
      helpers_ = helpers;
      joined_ = 0;
      next_chunk_.store(0, std::memory_order_relaxed);
      pending_ = n_chunks;
      error_ = nullptr;
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    WorkOnChunks();
    std::exception_ptr error;
    {
      std::unique_lock<std::mutex> lock(mu_);
      // Also wait for workers to leave WorkOnChunks, so the next job can reset the fields.
      done_.wait(lock, [this] { return pending_ == 0 && active_ == 0; });
      fn_ = nullptr;
      error = error_;
    }
    if (error) std::rethrow_exception(error);
  }

  int Workers() {
    std::lock_guard<std::mutex> lock(mu_);
    return static_cast<int>(workers_.size());
  }

 private:
  void EnsureWorkers(int wanted) {
    std::lock_guard<std::mutex> lock(mu_);
    while (static_cast<int>(workers_.size()) < wanted) {
      workers_.emplace_back([this] { WorkerLoop(); });
    }
  }

  // Claims and runs chunks of the current job until none is left.
  void WorkOnChunks() {
    const bool was_inside = t_in_parallel;
    t_in_parallel = true;
    for (;;) {
      const int c = next_chunk_.fetch_add(1, std::memory_order_acq_rel);
      if (c >= n_chunks_) break;
      const int64_t begin = n_tasks_ * c / n_chunks_;
      const int64_t end = n_tasks_ * (c + 1) / n_chunks_;
      std::exception_ptr error;
      try {
        (*fn_)(begin, end);
      } catch (...) {
        error = std::current_exception();
      }
      std::lock_guard<std::mutex> lock(mu_);
      if (error && !error_) error_ = error;
      if (--pending_ == 0) done_.notify_all();
    }
    t_in_parallel = was_inside;
  }

  void WorkerLoop() {
    uint64_t seen = generation_.load(std::memory_order_acquire);
    for (;;) {
      // Short spin: a following kernel call usually comes within microseconds.
      const auto spin_until = std::chrono::steady_clock::now() + std::chrono::microseconds(50);
      while (generation_.load(std::memory_order_acquire) == seen &&
             std::chrono::steady_clock::now() < spin_until) {
        std::this_thread::yield();
      }
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [&] { return stop_ || generation_.load() != seen; });
      if (stop_) return;
      seen = generation_.load();
      // The job may be over already, or have all the helpers it asked for.
      if (fn_ == nullptr || joined_ >= helpers_) continue;
      ++joined_;
      ++active_;
      lock.unlock();
      WorkOnChunks();
      lock.lock();
      if (--active_ == 0) done_.notify_all();
    }
  }

  std::mutex call_mu_;  // One job at a time.
  std::mutex mu_;       // Guards the job fields, pending_, error_, stop_, workers_.
  std::condition_variable wake_, done_;
  std::vector<std::thread> workers_;
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t n_tasks_ = 0;
  int n_chunks_ = 0;
  std::atomic<int> next_chunk_{0};
  std::atomic<uint64_t> generation_{0};
  int pending_ = 0;  // Chunks not yet finished.
  int active_ = 0;   // Workers inside WorkOnChunks for the current job.
  int helpers_ = 0;  // Workers the current job may use (threads - 1).
  int joined_ = 0;   // Workers that joined the current job.
  std::exception_ptr error_;
  bool stop_ = false;
};

std::atomic<ThreadPool*> g_pool{nullptr};
std::mutex g_pool_mu;

void ForgetPoolInChild() {
  // The child has none of the parent's threads; the old pool (and its possibly locked
  // mutexes) is leaked on purpose and a fresh one is made on first use.
  g_pool.store(nullptr);
  new (&g_pool_mu) std::mutex();
}

ThreadPool& Pool() {
  ThreadPool* pool = g_pool.load(std::memory_order_acquire);
  if (pool != nullptr) return *pool;
  std::lock_guard<std::mutex> lock(g_pool_mu);
  pool = g_pool.load();
  if (pool == nullptr) {
    static std::once_flag atfork_once;
    std::call_once(atfork_once, [] { pthread_atfork(nullptr, nullptr, &ForgetPoolInChild); });
    pool = new ThreadPool();  // Lives until exit (never joined at static destruction).
    g_pool.store(pool, std::memory_order_release);
  }
  return *pool;
}

}  // namespace

void ParallelFor(int64_t n_tasks, int threads,
                 const std::function<void(int64_t begin, int64_t end)>& fn) {
  if (n_tasks <= 0) return;
  if (threads <= 0) threads = DefaultThreads();
  if (threads > kMaxThreads) threads = kMaxThreads;
  if (threads == 1 || n_tasks == 1) {
    fn(0, n_tasks);
    return;
  }
  const int64_t max_chunks = static_cast<int64_t>(threads) * kChunksPerThread;
  const int n_chunks = static_cast<int>(n_tasks < max_chunks ? n_tasks : max_chunks);
  if (t_in_parallel) {
    // Nested call from inside a task: same chunks, run here in order.
    for (int c = 0; c < n_chunks; ++c) fn(n_tasks * c / n_chunks, n_tasks * (c + 1) / n_chunks);
    return;
  }
  Pool().Run(n_tasks, n_chunks, threads - 1, fn);
}

int ThreadPoolWorkers() {
  ThreadPool* pool = g_pool.load();
  return pool == nullptr ? 0 : pool->Workers();
}

}  // namespace binmx
