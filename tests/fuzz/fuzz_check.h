// REQUIRE_INVARIANT(cond): a property a fuzz target checks on every input. Unlike assert() it is
// never compiled out (NDEBUG plays no part); a violation prints the expression and its place to
// stderr and aborts, which libFuzzer reports as a crash with the input that caused it, and which
// fails the doctest replay of the targets (tests/unit/fuzz_replay) in CI.
#pragma once

#include <cstdio>
#include <cstdlib>

namespace pororoca::fuzz {

[[noreturn]] inline void InvariantFailed(const char* expr, const char* file, int line) {
  std::fprintf(stderr, "%s:%d: invariant failed: %s\n", file, line, expr);
  std::abort();
}

}  // namespace pororoca::fuzz

#define REQUIRE_INVARIANT(cond) \
  ((cond) ? static_cast<void>(0) : ::pororoca::fuzz::InvariantFailed(#cond, __FILE__, __LINE__))
