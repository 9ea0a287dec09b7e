/*
 * binmx core (internal): a persistent thread pool and ParallelFor over a range of tasks.
 *
 * ParallelFor(n_tasks, threads, fn) splits [0, n_tasks) into contiguous chunks [begin, end)
 * (a few per thread; the split depends only on n_tasks and threads) and calls fn(begin, end)
 * once per chunk on up to `threads` threads, the calling thread taking part. A thread may run
 * several chunks, so per-call scratch belongs inside fn (or in thread_local storage).
 * It returns when every chunk is done; the first exception thrown by fn is rethrown.
 * Workers are created once (lazily, grown on demand) and then reused, so a call costs a wake-up,
 * not a thread spawn.
 *
 * Safe to call from several threads at once: calls take turns on the pool. A call made from
 * inside a running task (recursion) runs its chunks inline on that thread, so it never
 * deadlocks. After fork() the child gets a fresh pool.
 */
#ifndef BINMX_PARALLEL_H_
#define BINMX_PARALLEL_H_

#include <cstdint>
#include <functional>

namespace binmx {

// threads <= 0 means DefaultThreads(). Chunking depends only on (n_tasks, threads).
void ParallelFor(int64_t n_tasks, int threads,
                 const std::function<void(int64_t begin, int64_t end)>& fn);

// Number of pool workers alive (for tests): grows to max(threads) - 1 requested so far.
int ThreadPoolWorkers();

}  // namespace binmx

#endif  // BINMX_PARALLEL_H_
