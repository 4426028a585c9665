// The main of every test binary: doctest's, plus one rule. A run given a test-case or test-suite
// filter that no test case matches fails instead of passing with nothing run. CTest runs each case
// as `--test-case=NAME`; a name CTest could not carry whole (a ';' splits it) would otherwise run
// zero cases and pass.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <set>
#include <string>
#include <string_view>

namespace {

struct RunCounts {
  unsigned started = 0;
  std::set<std::string> skipped_by_decorator;  // doctest::skip(true): matched, deliberately not run
};
RunCounts g_counts;

class CountingListener : public doctest::IReporter {
 public:
  explicit CountingListener(const doctest::ContextOptions&) {}
  void report_query(const doctest::QueryData&) override {}
  void test_run_start() override {}
  void test_run_end(const doctest::TestRunStats&) override {}
  void test_case_start(const doctest::TestCaseData&) override { ++g_counts.started; }
  void test_case_reenter(const doctest::TestCaseData&) override {}
  void test_case_end(const doctest::CurrentTestCaseStats&) override {}
  void test_case_exception(const doctest::TestCaseException&) override {}
  void subcase_start(const doctest::SubcaseSignature&) override {}
  void subcase_end() override {}
  void log_assert(const doctest::AssertData&) override {}
  void log_message(const doctest::MessageData&) override {}
  void test_case_skipped(const doctest::TestCaseData& tc) override {
    if (tc.m_skip) g_counts.skipped_by_decorator.insert(tc.m_name);
  }
};
REGISTER_LISTENER("poro_counting", 1, CountingListener);

// The value of a filter option (`-tc=`, `--test-case=`, `-ts=`, `--test-suite=`), or nullptr.
const char* FilterValue(std::string_view arg) {
  for (std::string_view prefix : {"-tc=", "--test-case=", "-ts=", "--test-suite="}) {
    if (arg.substr(0, prefix.size()) == prefix) return arg.data() + prefix.size();
  }
  return nullptr;
}

}  // namespace

int main(int argc, char** argv) {
  doctest::Context context(argc, argv);
  const int rc = context.run();
  if (context.shouldExit()) return rc;  // --help, --list-test-cases, --count ...
  std::string filters;
  for (int i = 1; i < argc; ++i) {
    const char* value = FilterValue(argv[i]);
    if (value == nullptr) continue;
    std::string name;  // CTest escapes the commas of a name (a comma separates filters)
    for (const char* p = value; *p != '\0'; ++p) {
      if (*p == '\\' && p[1] == ',') ++p;
      name += *p;
    }
    if (g_counts.skipped_by_decorator.count(name) > 0) return rc;  // matched, skipped on purpose
    filters += filters.empty() ? name : " | " + name;
  }
  if (!filters.empty() && g_counts.started == 0) {
    std::fprintf(stderr, "%s: no test case matches %s: nothing was run\n", argv[0], filters.c_str());
    return rc == 0 ? 1 : rc;
  }
  return rc;
}
