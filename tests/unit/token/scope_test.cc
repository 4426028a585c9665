#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "token/token.h"

namespace pororoca::token {
namespace {

Claims With(std::vector<std::string> scopes) {
  Claims c;
  c.scopes = std::move(scopes);
  return c;
}

bool Allows(const std::vector<std::string>& scopes, Action a, std::string_view path) {
  Status s = CheckScope(With(scopes), a, path);
  if (!s.ok()) CHECK(s.code() == Code::kPermissionDenied);
  return s.ok();
}

TEST_SUITE("token.scope") {
  TEST_CASE("a scope path covers itself and what is below it, on a component boundary") {
    const std::vector<std::string> s = {"storage.read:/data"};
    CHECK(Allows(s, Action::kRead, "/data"));
    CHECK(Allows(s, Action::kRead, "/data/"));
    CHECK(Allows(s, Action::kRead, "/data/x"));
    CHECK(Allows(s, Action::kRead, "/data/x/y.bin"));
    CHECK_FALSE(Allows(s, Action::kRead, "/database"));
    CHECK_FALSE(Allows(s, Action::kRead, "/dat"));
    CHECK_FALSE(Allows(s, Action::kRead, "/"));
    CHECK_FALSE(Allows(s, Action::kRead, "/other/data"));
    CHECK_FALSE(Allows({"storage.read:/data/x"}, Action::kRead, "/data/xy"));
    CHECK(Allows({"storage.read:/data/"}, Action::kRead, "/data/x"));
    CHECK_FALSE(Allows({"storage.read:/data/"}, Action::kRead, "/database"));
  }

  TEST_CASE("the root scope covers every path") {
    for (const char* p : {"/", "/a", "/a/b/c", "/..a", "/.hidden/x"}) {
      CAPTURE(p);
      CHECK(Allows({"storage.read:/"}, Action::kRead, p));
    }
  }

  TEST_CASE("each action needs its scope, storage.modify implies storage.create only") {
    CHECK(Allows({"storage.create:/in"}, Action::kCreate, "/in/f"));
    CHECK_FALSE(Allows({"storage.create:/in"}, Action::kRead, "/in/f"));
    CHECK_FALSE(Allows({"storage.create:/in"}, Action::kModify, "/in/f"));
    CHECK(Allows({"storage.modify:/in"}, Action::kModify, "/in/f"));
    CHECK(Allows({"storage.modify:/in"}, Action::kCreate, "/in/f"));
    CHECK_FALSE(Allows({"storage.modify:/in"}, Action::kRead, "/in/f"));
    CHECK_FALSE(Allows({"storage.read:/"}, Action::kCreate, "/in/f"));
    CHECK_FALSE(Allows({"storage.read:/"}, Action::kModify, "/in/f"));
    CHECK(Allows({"storage.read:/a", "storage.create:/in", "openid"}, Action::kCreate, "/in/f"));
  }

  TEST_CASE("scopes of other forms grant nothing") {
    for (const char* s : {"storage.read", "storage.read:", "storage.read:data", "storage.read:/data/../etc",
                          "storage.read:/data/./x", "storage.read://", "storage.readx:/", "Storage.read:/",
                          "storage.read :/", "read:/", "compute.read:/", "openid", ":/"}) {
      CAPTURE(s);
      CHECK_FALSE(Allows({s}, Action::kRead, "/etc"));
      CHECK_FALSE(Allows({s}, Action::kRead, "/data/x"));
    }
  }

  TEST_CASE("paths that are empty, relative, or have empty, '.' or '..' components are refused") {
    const Claims all = With({"storage.read:/", "storage.modify:/"});
    for (std::string p :
         {std::string(), std::string("data"), std::string("data/x"), std::string("/data/../etc"),
          std::string("/.."), std::string("/data/.."), std::string("/./data"), std::string("/data/."),
          std::string("/data//x"), std::string("//"), std::string("/data/x//"), std::string("/da\0ta", 6)}) {
      CAPTURE(p);
      for (Action a : {Action::kRead, Action::kCreate, Action::kModify}) {
        CHECK(CheckScope(all, a, p).code() == Code::kInvalidArgument);
      }
    }
    CHECK(std::string(CheckScope(all, Action::kRead, "/a/../b").message()).find("'..'") != std::string::npos);
  }

  TEST_CASE("a refusal names the scope needed, the path and the token's scopes") {
    Status s = CheckScope(With({"storage.read:/data"}), Action::kCreate, "/x");
    CHECK(s.code() == Code::kPermissionDenied);
    CHECK(s.message() == "token grants no storage.create for /x (scopes: storage.read:/data)");
    CHECK(CheckScope(With({}), Action::kModify, "/x").message() ==
          "token grants no storage.modify for /x (scopes: none)");
    CHECK(CheckScope(With({"storage.read:/a", "storage.read:/b"}), Action::kRead, "/c").message() ==
          "token grants no storage.read for /c (scopes: storage.read:/a storage.read:/b)");
    Status hostile = CheckScope(With({"storage.read:/a\nfake"}), Action::kRead, "/c\r");
    CHECK(std::string(hostile.message()).find_first_of("\r\n") == std::string::npos);
  }

  TEST_CASE("ActionScope names the WLCG scopes") {
    CHECK(ActionScope(Action::kRead) == "storage.read");
    CHECK(ActionScope(Action::kCreate) == "storage.create");
    CHECK(ActionScope(Action::kModify) == "storage.modify");
  }
}

}  // namespace
}  // namespace pororoca::token
