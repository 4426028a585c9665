#include <doctest/doctest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <set>
#include <thread>
#include <vector>

#include "pororoca/storage.h"

namespace pororoca::io {
namespace {

using std::chrono::milliseconds;

// Pages of [base, base + len) that are mapped (mincore), and how many there are in all.
std::pair<size_t, size_t> ResidentPages(const std::byte* base, size_t len) {
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> vec((len + page - 1) / page);
  REQUIRE(::mincore(const_cast<std::byte*>(base), len, vec.data()) == 0);
  size_t resident = 0;
  for (unsigned char v : vec) resident += v & 1;
  return {resident, vec.size()};
}

TEST_SUITE("io.buffer_pool") {
  TEST_CASE(
      "a new pool is not mapped yet, and Populate maps every page and keeps the bytes of buffers in use") {
    auto pool = BufferPool::Create(1 << 20, 8);
    REQUIRE(pool.has_value());
    BufferPool& p = **pool;
    auto [before, pages] = ResidentPages(p.base(), p.total_bytes());
    CHECK(before < pages);  // Create reserves; it does not touch every page
    auto b = p.Acquire(milliseconds(0));
    REQUIRE(b.has_value());
    std::memset(b->data(), 0x5a, 3 * 4096);  // a buffer in use while the pool is populated
    Status s = p.Populate();
    if (s.code() == Code::kNotSupported) {
      MESSAGE("MADV_POPULATE_WRITE is not supported by this kernel: " << s.ToString());
      return;
    }
    REQUIRE(s.ok());
    auto [after, pages2] = ResidentPages(p.base(), p.total_bytes());
    CHECK(after == pages2);
    for (size_t i = 0; i < 3 * 4096; ++i) {
      if (b->data()[i] != std::byte{0x5a}) FAIL("byte " << i << " of a buffer in use changed");
    }
    CHECK(b->data()[3 * 4096] == std::byte{0});  // untouched bytes read as zeros
  }

  TEST_CASE("Populate after StopPopulate maps nothing") {
    auto pool = BufferPool::Create(1 << 20, 4);
    REQUIRE(pool.has_value());
    (*pool)->StopPopulate();
    Status s = (*pool)->Populate();
    if (s.code() == Code::kNotSupported) return;
    CHECK(s.code() == Code::kCancelled);
    CHECK(ResidentPages((*pool)->base(), (*pool)->total_bytes()).first == 0);
  }

  TEST_CASE("Populate waits while busy, maps nothing meanwhile, and goes on when the work ends") {
    auto pool = BufferPool::Create(1 << 20, 4);
    REQUIRE(pool.has_value());
    BufferPool& p = **pool;
    std::atomic<int> busy{1};
    Status result;
    std::atomic<bool> done{false};
    std::thread t([&] {
      result = p.Populate(&busy);
      done.store(true);
    });
    std::this_thread::sleep_for(milliseconds(100));
    CHECK_FALSE(done.load());
    CHECK(ResidentPages(p.base(), p.total_bytes()).first == 0);
    busy.store(0);
    for (int i = 0; i < 500 && !done.load(); ++i) std::this_thread::sleep_for(milliseconds(10));
    t.join();
    if (result.code() == Code::kNotSupported) return;
    REQUIRE(result.ok());
    auto [after, pages] = ResidentPages(p.base(), p.total_bytes());
    CHECK(after == pages);
  }

  TEST_CASE("Populate waiting while busy stops when asked to") {
    auto pool = BufferPool::Create(1 << 20, 4);
    REQUIRE(pool.has_value());
    std::atomic<int> busy{1};
    Status result;
    std::atomic<bool> started{false};
    std::thread t([&] {
      started.store(true);
      result = (*pool)->Populate(&busy);
    });
    while (!started.load()) std::this_thread::yield();
    std::this_thread::sleep_for(milliseconds(50));  // inside the busy wait by now, on any machine
    const auto t0 = std::chrono::steady_clock::now();
    (*pool)->StopPopulate();
    t.join();
    CHECK(result.code() == Code::kCancelled);
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(2));  // woken, not polled
    CHECK(ResidentPages((*pool)->base(), (*pool)->total_bytes()).first == 0);
  }

  TEST_CASE("Populate maps nothing before the pool has been idle for `quiet`") {
    auto pool = BufferPool::Create(1 << 20, 4);
    REQUIRE(pool.has_value());
    std::atomic<int> busy{0};
    Status result;
    std::thread t([&] { result = (*pool)->Populate(&busy, std::chrono::seconds(30)); });
    std::this_thread::sleep_for(milliseconds(200));
    (*pool)->StopPopulate();
    t.join();
    CHECK(result.code() == Code::kCancelled);
    CHECK(ResidentPages((*pool)->base(), (*pool)->total_bytes()).first == 0);
  }

  TEST_CASE("buffers are 4096-aligned, distinct, and all return to the pool when destroyed") {
    auto pool = BufferPool::Create(10000, 4);
    REQUIRE(pool.has_value());
    BufferPool& p = **pool;
    CHECK(p.buffer_size() == 12288);  // rounded up to a page multiple
    CHECK(p.total_bytes() == 4 * 12288);
    {
      std::vector<Buffer> held;
      std::set<int> indexes;
      for (int i = 0; i < 4; ++i) {
        auto b = p.Acquire(milliseconds(0));
        REQUIRE(b.has_value());
        CHECK(reinterpret_cast<uintptr_t>(b->data()) % kDirectAlign == 0);
        CHECK(b->data() == p.base() + static_cast<size_t>(b->index()) * p.buffer_size());
        CHECK(b->capacity() == p.buffer_size());
        std::memset(b->data(), i, b->capacity());  // the whole buffer is writable
        indexes.insert(b->index());
        held.push_back(std::move(*b));
      }
      CHECK(indexes.size() == 4);
      CHECK(p.free_count() == 0);
    }
    CHECK(p.free_count() == 4);
  }

  TEST_CASE("an exhausted pool times out with a retryable ResourceExhausted") {
    auto pool = BufferPool::Create(4096, 1);
    REQUIRE(pool.has_value());
    Buffer held = (*pool)->TryAcquire();
    REQUIRE(held.valid());
    CHECK_FALSE((*pool)->TryAcquire().valid());
    const auto start = std::chrono::steady_clock::now();
    auto r = (*pool)->Acquire(milliseconds(50));
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code() == Code::kResourceExhausted);
    CHECK(r.error().retryable());
    CHECK(std::chrono::steady_clock::now() - start >= milliseconds(50));
  }

  TEST_CASE(
      "senders leave SenderReserve() buffers to receivers, and a waiting sender wakes once it may take one") {
    auto pool = BufferPool::Create(4096, 8);
    REQUIRE(pool.has_value());
    BufferPool& p = **pool;
    CHECK(p.SenderReserve() == 2);
    std::vector<Buffer> senders;
    for (int i = 0; i < 6; ++i) {
      auto b = p.Acquire(milliseconds(0), p.SenderReserve());
      REQUIRE(b.has_value());
      senders.push_back(std::move(*b));
    }
    auto refused = p.Acquire(milliseconds(20), p.SenderReserve());
    REQUIRE_FALSE(refused.has_value());
    CHECK(refused.error().code() == Code::kResourceExhausted);
    auto r1 = p.Acquire(milliseconds(0));  // a receiver still gets the reserved ones
    auto r2 = p.Acquire(milliseconds(0));
    REQUIRE(r1.has_value());
    REQUIRE(r2.has_value());
    // A sender waits while only the reserve is free; every release wakes it to look again.
    std::thread releaser([&] {
      std::this_thread::sleep_for(milliseconds(20));
      *r1 = Buffer();
      std::this_thread::sleep_for(milliseconds(20));
      *r2 = Buffer();
      std::this_thread::sleep_for(milliseconds(20));
      senders.pop_back();
    });
    auto waited = p.Acquire(milliseconds(5000), p.SenderReserve());
    releaser.join();
    CHECK(waited.has_value());
    CHECK(p.free_count() == 2);
  }

  TEST_CASE("a blocked Acquire wakes up when another thread releases a buffer") {
    auto pool = BufferPool::Create(4096, 1);
    REQUIRE(pool.has_value());
    Buffer held = (*pool)->TryAcquire();
    std::thread releaser([&] {
      std::this_thread::sleep_for(milliseconds(20));
      held.Release();
    });
    auto r = (*pool)->Acquire(milliseconds(5000));
    releaser.join();
    REQUIRE(r.has_value());
    CHECK(r->valid());
  }

  TEST_CASE("moving a buffer moves the lease, and Release returns it early") {
    auto pool = BufferPool::Create(4096, 2);
    REQUIRE(pool.has_value());
    Buffer a = (*pool)->TryAcquire();
    const int index = a.index();
    Buffer b = std::move(a);
    CHECK_FALSE(a.valid());  // NOLINT(bugprone-use-after-move): checking the moved-from state
    CHECK(b.index() == index);
    CHECK((*pool)->free_count() == 1);
    Buffer c = (*pool)->TryAcquire();
    b = std::move(c);  // b's old buffer goes back
    CHECK((*pool)->free_count() == 1);
    b.Release();
    CHECK_FALSE(b.valid());
    CHECK((*pool)->free_count() == 2);
  }

  TEST_CASE("zero size or zero count is an invalid argument") {
    CHECK(BufferPool::Create(0, 4).error().code() == Code::kInvalidArgument);
    CHECK(BufferPool::Create(4096, 0).error().code() == Code::kInvalidArgument);
  }

  TEST_CASE("concurrent threads acquiring and releasing never share a buffer") {
    constexpr int kThreads = 4;
    constexpr int kIters = 2000;
    auto pool = BufferPool::Create(4096, 3);
    REQUIRE(pool.has_value());
    BufferPool& p = **pool;
    std::atomic<int> failures{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&p, &failures, t] {
        for (int i = 0; i < kIters; ++i) {
          auto b = p.Acquire(milliseconds(5000));
          if (!b.has_value()) {
            ++failures;
            continue;
          }
          // Stamp the buffer, yield, and check nobody else stamped it meanwhile.
          const uint32_t stamp = static_cast<uint32_t>(t * kIters + i);
          std::memcpy(b->data(), &stamp, sizeof stamp);
          std::this_thread::yield();
          uint32_t seen;
          std::memcpy(&seen, b->data(), sizeof seen);
          if (seen != stamp) ++failures;
        }
      });
    }
    for (auto& th : threads) th.join();
    CHECK(failures.load() == 0);
    CHECK(p.free_count() == 3);
  }
}

}  // namespace
}  // namespace pororoca::io
