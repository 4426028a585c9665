// Mutex, SharedMutex, their scoped locks and CondVar: std::mutex, std::shared_mutex and
// std::condition_variable with clang thread-safety annotations (base/thread_annotations.h), so that
// PORO_GUARDED_BY / PORO_REQUIRES on the state they guard are checked by `-Wthread-safety` (the `tsa`
// preset). libstdc++'s own types carry no annotations; guard shared state with these instead.
//
//   class Counter {
//    public:
//     void Add(int64_t n) PORO_EXCLUDES(mu_) {
//       MutexLock lock(&mu_);
//       total_ += n;
//       changed_.NotifyAll();
//     }
//     void WaitAtLeast(int64_t n) PORO_EXCLUDES(mu_) {
//       MutexLock lock(&mu_);
//       changed_.Wait(&mu_, [&]() PORO_REQUIRES(mu_) { return total_ >= n; });
//     }
//    private:
//     Mutex mu_;
//     CondVar changed_;
//     int64_t total_ PORO_GUARDED_BY(mu_) = 0;
//   };
//
// A predicate lambda that reads guarded state is annotated PORO_REQUIRES(mu_) as above: the analysis
// checks a lambda's body on its own and does not know that Wait calls it with the lock held.
//
// Lock order. A thread that holds more than one lock takes them in one global order, so that two
// threads can never wait on each other. The order is declared at the member, where the analysis checks
// it (`Mutex sched_mu_ PORO_ACQUIRED_BEFORE(mu_);`, clang -Wthread-safety-beta), and written in the
// member's comment when the two locks live in different objects (the analysis cannot name those).
// Functions that take a lock are PORO_EXCLUDES(it); functions that expect it held are
// PORO_REQUIRES(it), with a `Locked` suffix when a lock-taking sibling of the same name exists.
// No lock is held across a call into another module (Transport, Storage, a callback) unless the
// lock's comment says the lock exists to serialise exactly that call.
//
// Thread safety: every type here is itself thread-safe; MutexLock objects belong to one thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <shared_mutex>
#include <thread>

#include "base/thread_annotations.h"

namespace pororoca {

class CondVar;

// Exclusive lock. Not recursive: taking it twice on one thread deadlocks (and is a compile error
// under the analysis when the first acquisition is visible).
class PORO_CAPABILITY("mutex") Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void Lock() PORO_ACQUIRE() {
    mu_.lock();
    owner_.store(std::this_thread::get_id(), std::memory_order_relaxed);
  }
  void Unlock() PORO_RELEASE() {
    owner_.store(std::thread::id(), std::memory_order_relaxed);
    mu_.unlock();
  }
  bool TryLock() PORO_TRY_ACQUIRE(true) {
    if (!mu_.try_lock()) return false;
    owner_.store(std::this_thread::get_id(), std::memory_order_relaxed);
    return true;
  }
  // Aborts (PORO_CHECK) unless the calling thread holds this Mutex; afterwards the analysis treats it as
  // held. For functions the analysis cannot follow (callbacks run under the lock).
  void AssertHeld() const PORO_ASSERT_CAPABILITY(this);

 private:
  friend class CondVar;
  std::mutex mu_;
  // The holder, kept for AssertHeld (one relaxed store per Lock/Unlock).
  std::atomic<std::thread::id> owner_{};
};

// Reader-writer lock: many holders in shared mode or one in exclusive mode.
class PORO_CAPABILITY("shared_mutex") SharedMutex {
 public:
  SharedMutex() = default;
  SharedMutex(const SharedMutex&) = delete;
  SharedMutex& operator=(const SharedMutex&) = delete;

  void Lock() PORO_ACQUIRE() { mu_.lock(); }
  void Unlock() PORO_RELEASE() { mu_.unlock(); }
  void ReaderLock() PORO_ACQUIRE_SHARED() { mu_.lock_shared(); }
  void ReaderUnlock() PORO_RELEASE_SHARED() { mu_.unlock_shared(); }
  bool ReaderTryLock() PORO_TRY_ACQUIRE_SHARED(true) { return mu_.try_lock_shared(); }

 private:
  std::shared_mutex mu_;
};

// Holds a Mutex for its scope (leveldb MutexLock). Unlock()/Lock() drop and retake it inside the scope,
// e.g. around a blocking call; the destructor releases it only if held.
class PORO_SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex* mu) PORO_ACQUIRE(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() PORO_RELEASE() {
    if (held_) mu_->Unlock();
  }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

  void Unlock() PORO_RELEASE() {
    mu_->Unlock();
    held_ = false;
  }
  void Lock() PORO_ACQUIRE() {
    mu_->Lock();
    held_ = true;
  }

 private:
  Mutex* const mu_;
  bool held_ = true;
};

// Holds a SharedMutex exclusively for its scope.
class PORO_SCOPED_CAPABILITY WriterMutexLock {
 public:
  explicit WriterMutexLock(SharedMutex* mu) PORO_ACQUIRE(mu) : mu_(mu) { mu_->Lock(); }
  ~WriterMutexLock() PORO_RELEASE() { mu_->Unlock(); }
  WriterMutexLock(const WriterMutexLock&) = delete;
  WriterMutexLock& operator=(const WriterMutexLock&) = delete;

 private:
  SharedMutex* const mu_;
};

// Holds a SharedMutex in shared mode for its scope.
class PORO_SCOPED_CAPABILITY ReaderMutexLock {
 public:
  explicit ReaderMutexLock(SharedMutex* mu) PORO_ACQUIRE_SHARED(mu) : mu_(mu) { mu_->ReaderLock(); }
  ~ReaderMutexLock() PORO_RELEASE() { mu_->ReaderUnlock(); }
  ReaderMutexLock(const ReaderMutexLock&) = delete;
  ReaderMutexLock& operator=(const ReaderMutexLock&) = delete;

 private:
  SharedMutex* const mu_;
};

// Condition variable used with a Mutex the caller holds (it is released while waiting and held again on
// return). It is std::condition_variable handed the Mutex's own std::mutex, not
// std::condition_variable_any: _any keeps an internal mutex and a shared_ptr of its own and takes that
// extra lock on every wait and notify, which buys nothing when the lock is always a std::mutex.
// Waits taking a predicate return only when it is true or the time ran out; the others may return
// spuriously, as std's do. A predicate runs with the Mutex held. Notify may be called with or without the
// Mutex held.
class CondVar {
 public:
  CondVar() = default;
  CondVar(const CondVar&) = delete;
  CondVar& operator=(const CondVar&) = delete;

  void Wait(Mutex* mu) PORO_REQUIRES(mu) {
    std::unique_lock<std::mutex> lock(Lend(mu));
    cv_.wait(lock);
    Reclaim(mu, lock);
  }
  // The predicate waits are outside the analysis: it cannot tell that `mu` is the lock the predicate's
  // own PORO_REQUIRES names. Their callers are still checked against PORO_REQUIRES(mu).
  template <class Pred>
  void Wait(Mutex* mu, Pred pred) PORO_REQUIRES(mu) PORO_NO_THREAD_SAFETY_ANALYSIS {
    while (!pred()) Wait(mu);
  }
  // std::cv_status::timeout when `deadline` passed without a notification.
  template <class Clock, class Duration>
  std::cv_status WaitUntil(Mutex* mu, const std::chrono::time_point<Clock, Duration>& deadline)
      PORO_REQUIRES(mu) {
    std::unique_lock<std::mutex> lock(Lend(mu));
    std::cv_status st = cv_.wait_until(lock, deadline);
    Reclaim(mu, lock);
    return st;
  }
  // The predicate's last value: false means the time ran out with it still false.
  template <class Clock, class Duration, class Pred>
  bool WaitUntil(Mutex* mu, const std::chrono::time_point<Clock, Duration>& deadline, Pred pred)
      PORO_REQUIRES(mu) PORO_NO_THREAD_SAFETY_ANALYSIS {
    while (!pred()) {
      if (WaitUntil(mu, deadline) == std::cv_status::timeout) return pred();
    }
    return true;
  }
  template <class Rep, class Period>
  std::cv_status WaitFor(Mutex* mu, const std::chrono::duration<Rep, Period>& rel) PORO_REQUIRES(mu) {
    return WaitUntil(mu, std::chrono::steady_clock::now() + rel);
  }
  template <class Rep, class Period, class Pred>
  bool WaitFor(Mutex* mu, const std::chrono::duration<Rep, Period>& rel, Pred pred) PORO_REQUIRES(mu) {
    return WaitUntil(mu, std::chrono::steady_clock::now() + rel, std::move(pred));
  }

  void NotifyOne() { cv_.notify_one(); }
  void NotifyAll() { cv_.notify_all(); }

 private:
  // The caller's hold on `mu` is lent to a std::unique_lock for one wait and taken back after it. The
  // owner mark is cleared for the wait (other threads hold the mutex meanwhile) and set again after, so
  // AssertHeld stays right, also inside a predicate (the predicate loops are ours for that reason).
  static std::unique_lock<std::mutex> Lend(Mutex* mu) {
    mu->owner_.store(std::thread::id(), std::memory_order_relaxed);
    return std::unique_lock<std::mutex>(mu->mu_, std::adopt_lock);
  }
  static void Reclaim(Mutex* mu, std::unique_lock<std::mutex>& lock) {
    lock.release();
    mu->owner_.store(std::this_thread::get_id(), std::memory_order_relaxed);
  }
  std::condition_variable cv_;
};

}  // namespace pororoca
