// The supervisor of kos up: relayed lines, noticed exits, and a stop that ends children
// that ignore SIGTERM.
#include "up/supervisor.h"

#include <signal.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <sstream>

namespace kos::up {
namespace {

using namespace std::chrono_literals;

std::string read_all(std::FILE* f) {
  std::fflush(f);
  std::rewind(f);
  std::string s;
  char buf[4096];
  while (size_t n = std::fread(buf, 1, sizeof buf, f)) s.append(buf, n);
  return s;
}

bool alive(pid_t p) { return kill(p, 0) == 0; }

TEST(Supervisor, RelaysLinesWithTheChildsNameAndNoticesItsExit) {
  std::FILE* out = std::tmpfile();
  ASSERT_NE(out, nullptr);
  {
    Supervisor s(out);
    ASSERT_TRUE(s.spawn("talker", {"/bin/sh", "-c", "echo one; echo two >&2; printf three; exit 3"}).has_value());
    std::optional<std::string> gone;
    for (int i = 0; i < 500 && !gone; ++i) {
      gone = s.exited();
      if (!gone) std::this_thread::sleep_for(10ms);  // polling for the exit
    }
    ASSERT_TRUE(gone.has_value());
    EXPECT_EQ(*gone, "talker exited with status 3");
    EXPECT_FALSE(s.exited().has_value()) << "an exit is reported once";
    s.stop_all(1s);  // drains the relay
  }
  std::string text = read_all(out);
  std::fclose(out);
  EXPECT_NE(text.find("talker        | one\n"), std::string::npos) << text;
  EXPECT_NE(text.find("talker        | two\n"), std::string::npos) << text;
  EXPECT_NE(text.find("talker        | three\n"), std::string::npos) << "an unterminated last line is kept: " << text;
}

TEST(Supervisor, StopAllKillsAChildThatIgnoresSigterm) {
  std::FILE* out = std::tmpfile();
  Supervisor s(out);
  auto stubborn = s.spawn("stubborn", {"/bin/sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.05; done"});
  auto polite = s.spawn("polite", {"/bin/sleep", "60"});
  ASSERT_TRUE(stubborn.has_value());
  ASSERT_TRUE(polite.has_value());
  std::this_thread::sleep_for(200ms);  // the trap is set once "ready" is printed; a margin for the shell
  auto t0 = std::chrono::steady_clock::now();
  s.stop_all(500ms);
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_FALSE(alive(*stubborn));
  EXPECT_FALSE(alive(*polite));
  EXPECT_LT(took, 3s);
  EXPECT_TRUE(s.pids().empty());
  EXPECT_FALSE(s.exited().has_value()) << "exits caused by stop_all are not reported";
  std::fclose(out);
}

}  // namespace
}  // namespace kos::up
