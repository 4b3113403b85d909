// Persistent thread pool: workers spin briefly on a generation counter, then
// sleep on a condition variable. The caller is thread 0.
#include "threadpool.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace tribit {

// One step of a spin wait: a pause, and every 64th a yield of the core. On a
// machine with more runnable threads than cores (a shared host, a build next
// to us), the thread we wait for may be waiting for this very core: without
// the yield a 2-thread decode step of a small model took milliseconds instead
// of microseconds there. With nothing else runnable the yield returns at once.
static inline void relax(int spin) {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#endif
    if ((spin & 63) == 63) std::this_thread::yield();
}

struct ThreadPool::Impl {
    int n = 1;
    std::vector<std::thread> workers;
    std::mutex mu;
    std::condition_variable cv_start, cv_done;
    std::atomic<uint64_t> generation{0};
    std::atomic<int> pending{0};
    const std::function<void(int, int)>* job = nullptr;
    bool stop = false;

    void worker(int ith) {
        uint64_t seen = 0;
        for (;;) {
            // spin first: forward passes issue jobs back to back
            uint64_t g = generation.load(std::memory_order_acquire);
            for (int spin = 0; g == seen && spin < 20000; spin++) {
                relax(spin);
                g = generation.load(std::memory_order_acquire);
            }
            if (g == seen) {
                std::unique_lock<std::mutex> lk(mu);
                cv_start.wait(lk, [&] { return stop || generation.load() != seen; });
                if (stop) return;
                g = generation.load();
            }
            seen = g;
            (*job)(ith, n);
            if (pending.fetch_sub(1, std::memory_order_acq_rel) == 1) {
                std::lock_guard<std::mutex> lk(mu);
                cv_done.notify_one();
            }
        }
    }
};

// Stops and joins the workers started so far.
static void stop_workers(ThreadPool::Impl* impl) {
    {
        std::lock_guard<std::mutex> lk(impl->mu);
        impl->stop = true;
    }
    impl->cv_start.notify_all();
    for (auto& t : impl->workers) t.join();
}

// Exception-safe: when the OS refuses a thread, the workers already started are
// stopped and joined before the error leaves (they hold `impl_`; left running,
// they outlived the pool and crashed the process).
ThreadPool::ThreadPool(int n_threads) : impl_(new Impl) {
    impl_->n = std::max(1, n_threads);
    try {
        impl_->workers.reserve(size_t(impl_->n - 1));
        for (int i = 1; i < impl_->n; i++) impl_->workers.emplace_back([this, i] { impl_->worker(i); });
    } catch (const std::exception& e) {
        const size_t started = impl_->workers.size();
        stop_workers(impl_);
        delete impl_;
        throw std::runtime_error("could not start " + std::to_string(n_threads - 1) +
                                 " worker threads (the system refused after " + std::to_string(started) +
                                 "): " + e.what());
    }
}

ThreadPool::~ThreadPool() {
    stop_workers(impl_);
    delete impl_;
}

int ThreadPool::n_threads() const { return impl_->n; }

void ThreadPool::run(const std::function<void(int, int)>& fn) {
    Impl& s = *impl_;
    if (s.n == 1) {
        fn(0, 1);
        return;
    }
    s.job = &fn;
    s.pending.store(s.n - 1, std::memory_order_release);
    {
        std::lock_guard<std::mutex> lk(s.mu);
        s.generation.fetch_add(1, std::memory_order_acq_rel);
    }
    s.cv_start.notify_all();
    fn(0, s.n);
    // wait for the workers: spin, then sleep
    for (int spin = 0; s.pending.load(std::memory_order_acquire) != 0 && spin < 200000; spin++)
        relax(spin);
    if (s.pending.load(std::memory_order_acquire) != 0) {
        std::unique_lock<std::mutex> lk(s.mu);
        s.cv_done.wait(lk, [&] { return s.pending.load() == 0; });
    }
}

void ThreadPool::parallel_for(int64_t n, int64_t grain,
                              const std::function<void(int64_t, int64_t)>& fn) {
    if (n <= 0) return;
    grain = std::max<int64_t>(1, grain);
    const int64_t chunks = (n + grain - 1) / grain;
    const int nth = int(std::min<int64_t>(chunks, impl_->n));
    if (nth <= 1) {
        fn(0, n);
        return;
    }
    // About 4 contiguous, grain-aligned pieces per thread, taken from a shared
    // counter: a thread slowed by another process on its core takes fewer pieces
    // instead of holding up the others at the barrier (on the shared 2-core VM a
    // static split left ~10 % of a decode step spinning).
    const int64_t pieces = std::min<int64_t>(chunks, int64_t(nth) * 4);
    std::atomic<int64_t> next{0};
    run([&](int ith, int) {
        if (ith >= nth) return;
        for (int64_t p; (p = next.fetch_add(1, std::memory_order_relaxed)) < pieces;) {
            const int64_t b = chunks * p / pieces * grain, e = std::min(n, chunks * (p + 1) / pieces * grain);
            if (b < e) fn(b, e);
        }
    });
}

}  // namespace tribit
