// Defer: run a callable at scope exit unless Cancel()ed (seastar::defer, absl::Cleanup).
#pragma once

#include <utility>

namespace pororoca {

template <class F>
class Defer {
 public:
  explicit Defer(F f) : f_(std::move(f)) {}
  Defer(const Defer&) = delete;
  Defer& operator=(const Defer&) = delete;
  ~Defer() {
    if (armed_) f_();
  }
  void Cancel() { armed_ = false; }

 private:
  F f_;
  bool armed_ = true;
};

}  // namespace pororoca
