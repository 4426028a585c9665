#include "pororoca/status.h"

#include <doctest/doctest.h>

#include <cerrno>

#include "base/unique_fd.h"

namespace pororoca {
namespace {

Result<int> Half(int v) {
  if (v % 2) return Status::InvalidArgument("odd value");
  return v / 2;
}

Status Chain(int v, int* out) {
  PORO_ASSIGN_OR_RETURN(int h, Half(v));
  PORO_ASSIGN_OR_RETURN(*out, Half(h));
  return Status::OK();
}

TEST_SUITE("base.status") {
  TEST_CASE("ok status has no message and code kOk") {
    Status s;
    CHECK(s.ok());
    CHECK(s.code() == Code::kOk);
    CHECK(s.ToString() == "OK");
  }

  TEST_CASE("IoError maps errno to a code and keeps errno and context") {
    Status s = Status::IoError("open /data/f.bin", ENOENT);
    CHECK(s.code() == Code::kNotFound);
    CHECK(s.sys_errno() == ENOENT);
    CHECK(s.ToString() == "NotFound: open /data/f.bin: No such file or directory");
    CHECK(Status::IoError("write x", ENOSPC).code() == Code::kResourceExhausted);
    CHECK(Status::IoError("connect", ECONNREFUSED).retryable());
    CHECK_FALSE(Status::IoError("open", EACCES).retryable());
  }

  TEST_CASE("side, retryable and annotation survive copies") {
    Status s = Status::DataLoss("chunk 3");
    s.WithSide(Side::kDestination).WithRetryable(true).Annotate("file a.bin");
    Status c = s;
    CHECK(c.side() == Side::kDestination);
    CHECK(c.retryable());
    CHECK(c.message() == "file a.bin: chunk 3");
  }

  TEST_CASE("macros propagate the first error") {
    int out = 0;
    CHECK(Chain(8, &out).ok());
    CHECK(out == 2);
    Status s = Chain(6, &out);
    CHECK(s.code() == Code::kInvalidArgument);
  }

  TEST_CASE("Result built from an OK status becomes an internal error") {
    Result<int> r{Status::OK()};
    CHECK_FALSE(r.has_value());
    CHECK(r.error().code() == Code::kInternal);
  }

  TEST_CASE("UniqueFd::Open names the path on failure") {
    auto r = UniqueFd::Open("/nonexistent/dir/file", 0);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().ToString().find("/nonexistent/dir/file") != std::string::npos);
  }
}

}  // namespace
}  // namespace pororoca
