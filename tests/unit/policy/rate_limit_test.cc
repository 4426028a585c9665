#include "policy/rate_limit.h"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

namespace pororoca::policy {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::string RateError(std::string_view text) {
  Result<uint64_t> r = ParseRate(text);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code() == Code::kInvalidArgument);
  return std::string(r.error().message());
}

}  // namespace

TEST_SUITE("policy.rate") {
  TEST_CASE("ParseRate: units, fractions and bare integers") {
    struct Case {
      const char* text;
      uint64_t bytes_per_s;
    };
    const Case cases[] = {
        {"2Gbit/s", 250'000'000},
        {"1.5Gbit/s", 187'500'000},
        {"100Gbit/s", 12'500'000'000},
        {"1Tbit/s", 125'000'000'000},
        {"800Mbit/s", 100'000'000},
        {"8kbit/s", 1000},
        {"8bit/s", 1},
        {"500MiB/s", 500ull * 1024 * 1024},
        {"1GiB/s", 1024ull * 1024 * 1024},
        {"2KiB/s", 2048},
        {"1TiB/s", 1024ull * 1024 * 1024 * 1024},
        {"100MB/s", 100'000'000},
        {"3GB/s", 3'000'000'000},
        {"1TB/s", 1'000'000'000'000},
        {"64KB/s", 64'000},
        {"64kB/s", 64'000},
        {"10B/s", 10},
        {"0.5MiB/s", 512 * 1024},
        {"1.25 GB/s", 1'250'000'000},
        {"  250000000 ", 250'000'000},
        {"1", 1},
        {"18446744073709551615", 18446744073709551615ull},
        {"2.99B/s", 2},  // rounded down
        {"0000000000000000000000001B/s", 1},
    };
    for (const Case& c : cases) {
      CAPTURE(c.text);
      Result<uint64_t> r = ParseRate(c.text);
      REQUIRE_MESSAGE(r.ok(), r.status().ToString());
      CHECK(*r == c.bytes_per_s);
    }
  }

  TEST_CASE("ParseRate: errors quote the text") {
    CHECK(RateError("") == "rate '': expected a number and a unit, such as 2Gbit/s or 500MiB/s");
    CHECK(RateError("fast") == "rate 'fast': expected a number and a unit, such as 2Gbit/s or 500MiB/s");
    CHECK(RateError("-1MB/s") == "rate '-1MB/s': expected a number and a unit, such as 2Gbit/s or 500MiB/s");
    CHECK(RateError("2Gb/s") ==
          "rate '2Gb/s': unknown unit 'Gb/s' (bit/s, kbit/s, Mbit/s, Gbit/s, Tbit/s, B/s, KB/s, MB/s, GB/s, "
          "TB/s, "
          "KiB/s, MiB/s, GiB/s, TiB/s)");
    CHECK(RateError("2 gbit/s").find("unknown unit 'gbit/s'") != std::string::npos);
    CHECK(RateError("1.5") == "rate '1.5': a number without a unit is bytes/s and must be whole");
    CHECK(RateError("1.MB/s") == "rate '1.MB/s': expected digits after the decimal point");
    CHECK(RateError("0") == "rate '0': below 1 byte/s");
    CHECK(RateError("0.0Gbit/s") == "rate '0.0Gbit/s': below 1 byte/s");
    CHECK(RateError("4bit/s") == "rate '4bit/s': below 1 byte/s");
    CHECK(RateError("18446744073709551616") == "rate '18446744073709551616': too large");
    CHECK(RateError("99999999999999999999") == "rate '99999999999999999999': too large");
    CHECK(RateError("100000000000000000000") == "rate '100000000000000000000': too large");
    CHECK(RateError("20000000000TiB/s") == "rate '20000000000TiB/s': too large");
    CHECK(RateError("1.0000000000000000001GB/s") ==
          "rate '1.0000000000000000001GB/s': more than 18 decimal places");
    CHECK(RateError(std::string_view("1\nMB/s")) ==
          "rate '1\\x0aMB/s': unknown unit '\\x0aMB/s' (bit/s, kbit/s, "
          "Mbit/s, Gbit/s, Tbit/s, B/s, KB/s, MB/s, GB/s, TB/s, KiB/s, "
          "MiB/s, GiB/s, TiB/s)");
  }

  TEST_CASE("TokenBucket: four threads together get the rate") {
    constexpr uint64_t kRate = 40 * 1000 * 1000;  // 40 MB/s
    constexpr uint64_t kBurst = 64 * 1024;
    constexpr uint64_t kChunk = 256 * 1024;
    constexpr double kSeconds = 2.0;
    TokenBucket bucket(kRate, kBurst);
    std::atomic<uint64_t> passed{0};
    std::vector<std::thread> threads;
    const auto t0 = Clock::now();
    const auto stop =
        t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(kSeconds));
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&] {
        while (Clock::now() < stop) {
          CHECK(bucket.Acquire(kChunk));  // CHECK: a REQUIRE may not throw on another thread
          if (Clock::now() <= stop) passed += kChunk;
        }
      });
    }
    for (auto& t : threads) t.join();
    const double expected = double(kBurst) + double(kRate) * kSeconds;
    const double ratio = double(passed.load()) / expected;
    CAPTURE(ratio);
    CHECK(ratio > 0.90);
    CHECK(ratio < 1.10);
  }

  TEST_CASE("TokenBucket: a request larger than the burst goes into debt") {
    constexpr uint64_t kRate = 100 * 1000 * 1000;
    constexpr uint64_t kChunk = 16 * 1024 * 1024;
    TokenBucket bucket(kRate, 64 * 1024);
    const auto t0 = Clock::now();
    REQUIRE(bucket.Acquire(kChunk));  // waits for kChunk - burst
    REQUIRE(bucket.Acquire(kChunk));  // and kChunk more
    const double s = SecondsSince(t0);
    const double expected = double(2 * kChunk - 64 * 1024) / double(kRate);  // 0.335 s
    CAPTURE(s);
    CHECK(s > expected * 0.95);
    CHECK(s < expected * 1.5);
  }

  TEST_CASE("TokenBucket: the burst passes at once, then callers wait") {
    TokenBucket bucket(1000 * 1000, 100 * 1000);
    const auto t0 = Clock::now();
    REQUIRE(bucket.Acquire(100 * 1000));
    CHECK(SecondsSince(t0) < 0.05);
    REQUIRE(bucket.Acquire(100 * 1000));  // 0.1 s at 1 MB/s
    const double s = SecondsSince(t0);
    CHECK(s > 0.095);
    CHECK(s < 0.3);
  }

  TEST_CASE("TokenBucket: cancel stops a waiter within the poll interval") {
    TokenBucket bucket(1000, 0);  // 1 kB/s: a 1 MB request would wait 1000 s
    std::atomic<bool> cancel{false};
    std::atomic<bool> result{true};
    Clock::time_point returned;
    std::thread waiter([&] {
      result = bucket.Acquire(1000 * 1000, &cancel);
      returned = Clock::now();
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    const auto cancelled_at = Clock::now();
    cancel = true;
    waiter.join();
    CHECK_FALSE(result.load());
    const double delay = std::chrono::duration<double>(returned - cancelled_at).count();
    CAPTURE(delay);
    CHECK(delay < 0.2);
    // The cancelled bytes were given back: the debt left does not delay a small request by 1000 s.
    std::atomic<bool> already{true};
    CHECK_FALSE(bucket.Acquire(1, &already));  // cancelled before it starts: takes nothing
    const auto t1 = Clock::now();
    REQUIRE(bucket.Acquire(50));
    CHECK(SecondsSince(t1) < 0.2);
  }

  TEST_CASE("TokenBucket: SetRate applies to callers already waiting") {
    TokenBucket bucket(1000, 0);
    std::atomic<bool> done{false};
    std::thread waiter([&] {
      CHECK(bucket.Acquire(10 * 1000 * 1000));  // 10000 s at the first rate
      done = true;
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    CHECK_FALSE(done.load());
    const auto t0 = Clock::now();
    bucket.SetRate(1000 * 1000 * 1000);  // now 10 ms
    waiter.join();
    CHECK(SecondsSince(t0) < 0.2);
    CHECK(bucket.rate() == 1000 * 1000 * 1000);
  }

  TEST_CASE("TokenBucket: rate 0 is unlimited, also for waiters") {
    TokenBucket unlimited(0, 0);
    const auto t0 = Clock::now();
    for (int i = 0; i < 1000; ++i) REQUIRE(unlimited.Acquire(1ull << 40));
    CHECK(SecondsSince(t0) < 0.1);

    TokenBucket bucket(1000, 0);
    std::thread waiter([&] { CHECK(bucket.Acquire(10 * 1000 * 1000)); });
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    const auto t1 = Clock::now();
    bucket.SetRate(0);
    waiter.join();
    CHECK(SecondsSince(t1) < 0.2);
  }
}

TEST_SUITE("policy.pair_limits") {
  TEST_CASE("one bucket per pair while it is held, with the latest rate") {
    PairLimits limits;
    const std::string pair = PairLimits::PairKey("lncc", "gpucloud");
    CHECK(pair == "lncc->gpucloud");
    std::shared_ptr<TokenBucket> a = limits.Bucket(pair, 1000);
    std::shared_ptr<TokenBucket> b = limits.Bucket(pair, 2000);
    CHECK(a == b);
    CHECK(a->rate() == 2000);
    CHECK(a->burst() == 64 * 1024);
    std::shared_ptr<TokenBucket> other = limits.Bucket(PairLimits::PairKey("lncc", "cenapad"), 1000);
    CHECK(other != a);
    CHECK(other->rate() == 1000);
    CHECK(limits.Bucket(pair, 100'000'000)->burst() == 64 * 1024);  // burst is fixed at creation

    std::weak_ptr<TokenBucket> weak = a;
    a.reset();
    b.reset();
    CHECK(weak.expired());
    std::shared_ptr<TokenBucket> fresh = limits.Bucket(pair, 100'000'000);
    CHECK(fresh->rate() == 100'000'000);
    CHECK(fresh->burst() == 10'000'000);  // 100 ms worth
  }

  TEST_CASE("concurrency slots: cap, message, release by destruction") {
    PairLimits limits;
    const std::string pair = PairLimits::PairKey("lncc", "gpucloud");
    std::vector<PairLimits::Slot> held;
    for (int i = 0; i < 4; ++i) {
      Result<PairLimits::Slot> s = limits.TryAcquire(pair, 4, "x");
      REQUIRE(s.ok());
      CHECK(s->held());
      held.push_back(std::move(s).value());
    }
    CHECK(limits.InUse(pair, "x") == 4);
    Result<PairLimits::Slot> full = limits.TryAcquire(pair, 4, "x");
    REQUIRE_FALSE(full.ok());
    CHECK(full.error().code() == Code::kResourceExhausted);
    CHECK(full.error().retryable());
    CHECK(full.error().message() == "concurrency cap of 4 transfers for lncc -> gpucloud reached (rule 'x')");
    CHECK(limits.InUse(pair, "x") == 4);

    // Another rule and another pair count separately.
    CHECK(limits.TryAcquire(pair, 4, "y").ok());
    CHECK(limits.TryAcquire(PairLimits::PairKey("lncc", "cenapad"), 4, "x").ok());

    held.pop_back();
    CHECK(limits.InUse(pair, "x") == 3);
    Result<PairLimits::Slot> again = limits.TryAcquire(pair, 4, "x");
    CHECK(again.ok());
    CHECK(limits.InUse(pair, "x") == 4);
    held.clear();
    again = Status::Cancelled("drop");
    CHECK(limits.InUse(pair, "x") == 0);

    Result<PairLimits::Slot> one = limits.TryAcquire(pair, 1, "solo");
    REQUIRE(one.ok());
    CHECK(limits.TryAcquire(pair, 1, "solo").error().message() ==
          "concurrency cap of 1 transfer for lncc -> gpucloud reached (rule 'solo')");
  }

  TEST_CASE("slots move, release once, and may outlive the registry") {
    PairLimits::Slot kept;
    CHECK_FALSE(kept.held());
    {
      PairLimits limits;
      Result<PairLimits::Slot> s = limits.TryAcquire("a->b", 1, "r");
      REQUIRE(s.ok());
      PairLimits::Slot moved = std::move(*s);
      CHECK(moved.held());
      CHECK_FALSE(s->held());
      CHECK(limits.InUse("a->b", "r") == 1);
      moved.Release();
      moved.Release();
      CHECK_FALSE(moved.held());
      CHECK(limits.InUse("a->b", "r") == 0);

      PairLimits::Slot first = std::move(limits.TryAcquire("a->b", 2, "r")).value();
      PairLimits::Slot second = std::move(limits.TryAcquire("a->b", 2, "r")).value();
      CHECK(limits.InUse("a->b", "r") == 2);
      first = std::move(second);  // releases first's own slot
      CHECK(limits.InUse("a->b", "r") == 1);
      kept = std::move(first);
    }
    CHECK(kept.held());
    kept.Release();  // the counters outlived the registry
    CHECK_FALSE(kept.held());
  }

  TEST_CASE("max 0 means no cap") {
    PairLimits limits;
    std::vector<PairLimits::Slot> held;
    for (int i = 0; i < 100; ++i) held.push_back(std::move(limits.TryAcquire("a->b", 0, "r")).value());
    CHECK(limits.InUse("a->b", "r") == 100);
  }

  TEST_CASE("slots under contention never exceed the cap") {
    PairLimits limits;
    std::atomic<int> running{0};
    std::atomic<int> peak{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
      threads.emplace_back([&] {
        for (int i = 0; i < 2000; ++i) {
          Result<PairLimits::Slot> s = limits.TryAcquire("a->b", 3, "r");
          if (!s.ok()) continue;
          int now = ++running;
          int p = peak.load();
          while (now > p && !peak.compare_exchange_weak(p, now)) {
          }
          --running;
        }
      });
    }
    for (auto& t : threads) t.join();
    CHECK(peak.load() <= 3);
    CHECK(peak.load() >= 1);
    CHECK(limits.InUse("a->b", "r") == 0);
  }
}

}  // namespace pororoca::policy
