// Skipping a test whose precondition this machine lacks (root, network namespaces, a
// Kubernetes client), and not skipping it where it must run. ctest reports a GoogleTest
// skip as "Not Run (Skipped)" in its summary, never as a pass (gtest_discover_tests sets
// SKIP_REGULAR_EXPRESSION). Under CI (CI=true: root, every dependency installed by scripts/install-deps.sh)
// a missing precondition is a failure, so nothing skips there.
#pragma once

#include <cstdlib>
#include <cstring>

#include <gtest/gtest.h>

namespace kos::testing {

inline bool under_ci() {
  const char* ci = std::getenv("CI");
  return ci && *ci && std::strcmp(ci, "false") != 0 && std::strcmp(ci, "0") != 0;
}

}  // namespace kos::testing

// Use like GTEST_SKIP(): `KOS_SKIP_UNLESS_CI() << "needs root";` returns from the function,
// as a skip, or under CI as a fatal failure with the same message.
#define KOS_SKIP_UNLESS_CI()                                                                \
  return ::testing::internal::AssertHelper(                                                 \
             ::kos::testing::under_ci() ? ::testing::TestPartResult::kFatalFailure          \
                                        : ::testing::TestPartResult::kSkip,                 \
             __FILE__, __LINE__,                                                            \
             ::kos::testing::under_ci() ? "under CI (CI=true) this test must run, not skip" \
                                        : "") = ::testing::Message()
