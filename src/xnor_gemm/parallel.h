/*
 * binmx core (internal): ParallelFor over a range of tasks, on OpenMP (the runtime MXNet uses).
 *
 * ParallelFor(n_tasks, threads, fn) splits [0, n_tasks) into contiguous chunks [begin, end)
 * (a few per thread; the split depends only on n_tasks and threads) and calls fn(begin, end)
 * once per chunk on up to `threads` threads, the calling thread taking part. A thread may run
 * several chunks, so per-call scratch belongs inside fn (or in thread_local storage).
 * It returns when every chunk is done; the first exception thrown by fn is rethrown.
 *
 * Safe to call from several threads at once (each gets its own OpenMP team). A call made from
 * inside a running task, or from inside any OpenMP parallel region, runs its chunks inline on
 * that thread, so it never deadlocks or oversubscribes. In a fork()ed child it runs inline
 * (libgomp cannot start a team there once the parent had one).
 * A thread may install a ParallelRunner of its own instead of OpenMP (see below).
 */
#ifndef BINMX_PARALLEL_H_
#define BINMX_PARALLEL_H_

#include <cstdint>
#include <functional>

namespace binmx {

// threads <= 0 means DefaultThreads(). Chunking depends only on (n_tasks, threads).
void ParallelFor(int64_t n_tasks, int threads,
                 const std::function<void(int64_t begin, int64_t end)>& fn);

// Another executor for the ParallelFor calls of one thread (the runtime's spinning pool, which
// keeps its workers awake between layers; src/runtime/thread_pool.h). RunChunks calls
// chunk(c) once for every c in [0, n_chunks), on up to MaxThreads() threads with the caller
// taking part, and returns when all are done. ParallelFor keeps its chunking (it depends only
// on n_tasks and min(threads, MaxThreads())), its exception rule and its nesting rule.
class ParallelRunner {
 public:
  virtual ~ParallelRunner() = default;
  virtual int MaxThreads() const = 0;
  virtual void RunChunks(int n_chunks, const std::function<void(int chunk)>& chunk) = 0;
};

// Installs `runner` for the ParallelFor calls made on the calling thread (nullptr: OpenMP
// again); returns the previous one. The caller keeps ownership.
ParallelRunner* SetThreadParallelRunner(ParallelRunner* runner);

}  // namespace binmx

#endif  // BINMX_PARALLEL_H_
