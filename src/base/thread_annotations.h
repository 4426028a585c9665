// Clang thread-safety annotations (https://clang.llvm.org/docs/ThreadSafetyAnalysis.html), leveldb's
// port/thread_annotations.h with PORO_ names. Checked by clang with -Wthread-safety (the `tsa` preset);
// empty under gcc, which has no such analysis.
//
// libstdc++'s std::mutex, std::shared_mutex and std::lock_guard carry no annotations, so the analysis
// sees only state guarded by the annotated types of base/mutex.h (Mutex, SharedMutex, MutexLock...).
//
//   Mutex mu_;
//   int64_t bytes_ PORO_GUARDED_BY(mu_) = 0;      // read or written only with mu_ held
//   void AddLocked(int64_t n) PORO_REQUIRES(mu_);  // the caller holds mu_
//   void Add(int64_t n) PORO_EXCLUDES(mu_);        // the caller must not hold mu_ (it takes it)
//
// Lock order between two members is declared where they are declared:
//   Mutex sched_mu_ PORO_ACQUIRED_BEFORE(mu_);
// clang 14 checks ACQUIRED_BEFORE/AFTER only under -Wthread-safety-beta, which the `tsa` preset turns on.
#pragma once

#if defined(__clang__) && defined(__has_attribute)
#define PORO_THREAD_ANNOTATION_(x) __attribute__((x))
#else
#define PORO_THREAD_ANNOTATION_(x)
#endif

// A class that is a lock ("mutex", "shared_mutex").
#define PORO_CAPABILITY(name) PORO_THREAD_ANNOTATION_(capability(name))
// An RAII class that holds a capability for its lifetime (MutexLock).
#define PORO_SCOPED_CAPABILITY PORO_THREAD_ANNOTATION_(scoped_lockable)

// Data members: readable with the lock held shared, writable with it held exclusively.
#define PORO_GUARDED_BY(x) PORO_THREAD_ANNOTATION_(guarded_by(x))
// Pointer members: the pointee (not the pointer) is guarded.
#define PORO_PT_GUARDED_BY(x) PORO_THREAD_ANNOTATION_(pt_guarded_by(x))

// Lock order between capabilities (checked under -Wthread-safety-beta).
#define PORO_ACQUIRED_BEFORE(...) PORO_THREAD_ANNOTATION_(acquired_before(__VA_ARGS__))
#define PORO_ACQUIRED_AFTER(...) PORO_THREAD_ANNOTATION_(acquired_after(__VA_ARGS__))

// Functions: what the caller must hold on entry (and still holds on return).
#define PORO_REQUIRES(...) PORO_THREAD_ANNOTATION_(requires_capability(__VA_ARGS__))
#define PORO_REQUIRES_SHARED(...) PORO_THREAD_ANNOTATION_(requires_shared_capability(__VA_ARGS__))
// Functions: what the caller must not hold (the function takes it; catches self-deadlock).
#define PORO_EXCLUDES(...) PORO_THREAD_ANNOTATION_(locks_excluded(__VA_ARGS__))

// Functions that take or drop a capability and return with it changed.
#define PORO_ACQUIRE(...) PORO_THREAD_ANNOTATION_(acquire_capability(__VA_ARGS__))
#define PORO_ACQUIRE_SHARED(...) PORO_THREAD_ANNOTATION_(acquire_shared_capability(__VA_ARGS__))
#define PORO_RELEASE(...) PORO_THREAD_ANNOTATION_(release_capability(__VA_ARGS__))
#define PORO_RELEASE_SHARED(...) PORO_THREAD_ANNOTATION_(release_shared_capability(__VA_ARGS__))
#define PORO_RELEASE_GENERIC(...) PORO_THREAD_ANNOTATION_(release_generic_capability(__VA_ARGS__))
#define PORO_TRY_ACQUIRE(...) PORO_THREAD_ANNOTATION_(try_acquire_capability(__VA_ARGS__))
#define PORO_TRY_ACQUIRE_SHARED(...) PORO_THREAD_ANNOTATION_(try_acquire_shared_capability(__VA_ARGS__))

// Functions that check at run time that the capability is held; the analysis trusts them afterwards.
#define PORO_ASSERT_CAPABILITY(x) PORO_THREAD_ANNOTATION_(assert_capability(x))
#define PORO_ASSERT_SHARED_CAPABILITY(x) PORO_THREAD_ANNOTATION_(assert_shared_capability(x))
// A getter that returns the capability guarding something (lets callers name it).
#define PORO_RETURN_CAPABILITY(x) PORO_THREAD_ANNOTATION_(lock_returned(x))

// Turns the analysis off for one function. Every use says why in a comment beside it.
#define PORO_NO_THREAD_SAFETY_ANALYSIS PORO_THREAD_ANNOTATION_(no_thread_safety_analysis)
