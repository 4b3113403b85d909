// A small persistent thread pool (docs/DESIGN.md: no OpenMP runtime): each
// Model owns one sized to its n_threads, and the per-kernel bindings keep one
// per thread count. Workers spin briefly on a barrier, then sleep.
#pragma once
#include <cstdint>
#include <functional>

namespace tribit {

class ThreadPool {
public:
    explicit ThreadPool(int n_threads);
    ~ThreadPool();
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

    int n_threads() const;
    // Runs fn(ith, nth) on every thread (the caller is thread 0) and returns
    // when all have finished.
    void run(const std::function<void(int ith, int nth)>& fn);
    // Calls fn on pieces of [0, n) (multiples of `grain` but the last) spread
    // over the threads; which thread runs a piece varies from call to call.
    void parallel_for(int64_t n, int64_t grain,
                      const std::function<void(int64_t begin, int64_t end)>& fn);

    struct Impl;

private:
    Impl* impl_;
};

}  // namespace tribit
