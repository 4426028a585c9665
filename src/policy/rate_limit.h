// Rate and concurrency caps for the transfers between two institutions.
//
// A policy rule may carry "rate_limit" and "max_concurrent". Every transfer of an institution pair
// shares one TokenBucket (all its transfers and all their streams draw from it), and takes one
// concurrency Slot for its whole life. PairLimits is the daemon-wide registry of both.
//
// Thread-safety: TokenBucket and PairLimits are fully thread-safe; a Slot is a value with one owner.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "pororoca/status.h"

namespace pororoca::policy {

// "2Gbit/s" -> 250000000 bytes/s. Accepts a decimal number (an optional fraction: "1.5Gbit/s"),
// optional blanks, then one unit: bit/s kbit/s Mbit/s Gbit/s Tbit/s (powers of 1000, bits),
// B/s KB/s (or kB/s) MB/s GB/s TB/s (powers of 1000, bytes), KiB/s MiB/s GiB/s TiB/s (powers of 1024).
// A bare integer is bytes/s. The result is rounded down and must be at least 1 byte/s and fit in
// 64 bits; anything else is kInvalidArgument naming the text.
Result<uint64_t> ParseRate(std::string_view text);

// A token bucket that lets `rate` bytes/s pass on average, with up to `burst` bytes saved up while
// idle. A rate of 0 means unlimited.
//
// Acquire(n) reserves n bytes at once, even if n exceeds the burst or the credit: the bucket goes
// into debt, and the caller (and every later caller) waits until the debt is repaid. Reservations
// are served in the order they were made, so many threads drawing from one bucket get, together,
// the rate, and each of them its turn (the same number of requests, whatever their sizes).
class TokenBucket {
 public:
  TokenBucket(uint64_t rate_bytes_per_s, uint64_t burst_bytes);
  TokenBucket(const TokenBucket&) = delete;
  TokenBucket& operator=(const TokenBucket&) = delete;

  // Blocks until n bytes may pass and returns true. Returns false, without taking anything, if
  // *cancel is (or becomes) true; it is polled at least every 100 ms while waiting.
  bool Acquire(uint64_t n, const std::atomic<bool>* cancel = nullptr);

  // Changes the rate (0 = unlimited). Threads already waiting in Acquire wait for the new rate.
  void SetRate(uint64_t rate_bytes_per_s);
  uint64_t rate() const;
  uint64_t burst() const { return burst_; }

 private:
  using Clock = std::chrono::steady_clock;
  // Credit is counted in nano-bytes (bytes * 1e9) so that refilling at any rate over any number of
  // nanoseconds is exact integer arithmetic; __int128 holds years of 100 Gbit/s.
  using NanoBytes = __int128;

  void RefillLocked(Clock::time_point now);

  const uint64_t burst_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  uint64_t rate_;           // guarded by mu_
  NanoBytes credit_;        // guarded by mu_; negative = debt
  NanoBytes refilled_;      // guarded by mu_; all credit ever added, never capped (waiters' clock)
  Clock::time_point last_;  // guarded by mu_
};

// The daemon-wide registry of token buckets and concurrency slots, keyed by institution pair
// (PairKey: "lncc->gpucloud").
class PairLimits {
 public:
  class State;

  // One running transfer counted against a concurrency cap; releases it when destroyed.
  class Slot {
   public:
    Slot() = default;
    Slot(Slot&& o) noexcept = default;
    Slot& operator=(Slot&& o) noexcept;
    Slot(const Slot&) = delete;
    Slot& operator=(const Slot&) = delete;
    ~Slot() { Release(); }

    bool held() const { return state_ != nullptr; }
    // Gives the slot back now (the destructor does it otherwise). Idempotent.
    void Release();

   private:
    friend class PairLimits;
    Slot(std::shared_ptr<State> state, std::string key) : state_(std::move(state)), key_(std::move(key)) {}
    std::shared_ptr<State> state_;  // keeps the counters alive if the registry goes first
    std::string key_;
  };

  PairLimits();

  // "src->dst".
  static std::string PairKey(std::string_view source, std::string_view destination);

  // The bucket of `pair`: the same object for as long as anyone holds it, set to `rate` (a later
  // call with another rate changes it for everyone, waiters included). A new bucket may burst
  // 100 ms worth of its rate (at least 64 KiB).
  std::shared_ptr<TokenBucket> Bucket(const std::string& pair, uint64_t rate_bytes_per_s);

  // Takes one of `max` slots of `pair` under rule `rule_id` (slots are counted per pair and rule).
  // max == 0 means no cap (the slot is still counted). When all are taken: kResourceExhausted,
  // retryable, "concurrency cap of 4 transfers for lncc -> gpucloud reached (rule 'x')".
  Result<Slot> TryAcquire(const std::string& pair, unsigned max, std::string_view rule_id);

  // Slots of `pair` under `rule_id` held right now.
  unsigned InUse(const std::string& pair, std::string_view rule_id) const;

 private:
  std::shared_ptr<State> state_;
};

}  // namespace pororoca::policy
