#include "crypto/encoding.h"

#include <doctest/doctest.h>

#include <string>
#include <utility>
#include <vector>

namespace pororoca::crypto {
namespace {

std::string DecodeError(const Result<std::string>& r) {
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code() == Code::kInvalidArgument);
  return std::string(r.error().message());
}

TEST_SUITE("crypto.encoding") {
  TEST_CASE("RFC 4648 test vectors in both alphabets") {
    const std::vector<std::pair<std::string, std::string>> vectors = {
        {"", ""},
        {"f", "Zg=="},
        {"fo", "Zm8="},
        {"foo", "Zm9v"},
        {"foob", "Zm9vYg=="},
        {"fooba", "Zm9vYmE="},
        {"foobar", "Zm9vYmFy"},
    };
    for (const auto& [plain, b64] : vectors) {
      CAPTURE(plain);
      CHECK(Base64Encode(plain) == b64);
      CHECK(*Base64Decode(b64) == plain);
      std::string url = b64.substr(0, b64.find('='));
      CHECK(Base64UrlEncode(plain) == url);
      CHECK(*Base64UrlDecode(url) == plain);
    }
  }

  TEST_CASE("binary round trips of every length up to 70, with the characters the alphabets differ in") {
    std::string bytes;
    for (int n = 0; n <= 70; ++n) {
      CAPTURE(n);
      auto url = Base64UrlDecode(Base64UrlEncode(bytes));
      auto padded = Base64Decode(Base64Encode(bytes));
      REQUIRE(url.ok());
      REQUIRE(padded.ok());
      CHECK(*url == bytes);
      CHECK(*padded == bytes);
      bytes += char(0xfb + n % 5);  // 0xfb.. encode to '+', '/', '-', '_'
    }
    CHECK(Base64Encode("\xfb\xff\xbf") == "+/+/");
    CHECK(Base64UrlEncode("\xfb\xff\xbf") == "-_-_");
  }

  TEST_CASE("base64url refuses padding, the standard alphabet, whitespace and impossible lengths") {
    CHECK(DecodeError(Base64UrlDecode("Zg==")).find("padding") != std::string::npos);
    CHECK(DecodeError(Base64UrlDecode("Zm8=")).find("padding") != std::string::npos);
    CHECK(DecodeError(Base64UrlDecode("+_8")).find("'+' at offset 0") != std::string::npos);
    CHECK(DecodeError(Base64UrlDecode("ab/c")).find("'/' at offset 2") != std::string::npos);
    CHECK(DecodeError(Base64UrlDecode("Zm9\n")).find("byte 0x0a at offset 3") != std::string::npos);
    CHECK(DecodeError(Base64UrlDecode("Zm 9")).find("byte 0x20 at offset 2") != std::string::npos);
    CHECK(DecodeError(Base64UrlDecode(std::string("Zm\0v", 4))).find("byte 0x00") != std::string::npos);
    CHECK(DecodeError(Base64UrlDecode("Zm9vY")).find("length 5") != std::string::npos);
  }

  TEST_CASE("non-zero unused trailing bits are refused, so each byte string has one text") {
    // "f" is Zg; Zh carries the same byte with a spare bit set.
    CHECK(*Base64UrlDecode("Zg") == "f");
    CHECK(DecodeError(Base64UrlDecode("Zh")).find("trailing bits") != std::string::npos);
    CHECK(*Base64UrlDecode("Zm8") == "fo");
    CHECK(DecodeError(Base64UrlDecode("Zm9")).find("trailing bits") != std::string::npos);
    CHECK(DecodeError(Base64Decode("Zh==")).find("trailing bits") != std::string::npos);
    CHECK(DecodeError(Base64Decode("Zm9=")).find("trailing bits") != std::string::npos);
  }

  TEST_CASE("standard base64 needs exact padding and the standard alphabet") {
    CHECK(DecodeError(Base64Decode("Zg")).find("multiple of 4") != std::string::npos);
    CHECK(DecodeError(Base64Decode("Zg=")).find("multiple of 4") != std::string::npos);
    CHECK(DecodeError(Base64Decode("Zg===")).find("multiple of 4") != std::string::npos);
    CHECK(DecodeError(Base64Decode("Z===")).find("padding inside") != std::string::npos);
    CHECK(DecodeError(Base64Decode("Z=g=")).find("padding inside") != std::string::npos);
    CHECK(DecodeError(Base64Decode("Zg==Zg==")).find("padding inside") != std::string::npos);
    CHECK(DecodeError(Base64Decode("-_-_")).find("'-' at offset 0") != std::string::npos);
  }

  TEST_CASE("HexLower writes two lowercase digits a byte") {
    const unsigned char bytes[] = {0x00, 0x0f, 0xa0, 0xff};
    CHECK(HexLower(bytes) == "000fa0ff");
    CHECK(HexLower(std::string_view("\x01\xAB", 2)) == "01ab");
    CHECK(HexLower(std::string_view()) == "");
  }
}

}  // namespace
}  // namespace pororoca::crypto
