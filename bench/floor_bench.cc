// kos-bench-floor: what this machine charges for the three things an attachment's lifecycle
// is made of below KOS's own code, measured the way KOS meets them (one at a time, spaced
// out, so the other side is asleep when each arrives):
//   - a message over loopback TCP to a process asleep in epoll_wait (a watch event to an
//     agent, a request to the API server): CPU of the sender's write and of the receiver's
//     wake-up and read;
//   - a hand-off between two threads of one process through a condition variable (a key
//     to a controller worker, a write to the SQLite writer): CPU of the signal and the
//     wake-up;
//   - an fdatasync of one appended 4 KiB page (a commit of the embedded store).
// CPU is getrusage's user + system time, per operation; the sender's own timer sleeps are
// measured alone and taken out. bench/scale's CPU per lifecycle divided by these says how
// much of it is the machine's toll for messages, hand-offs and syncs.
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>

#include <CLI/CLI.hpp>

namespace {

using Clock = std::chrono::steady_clock;

double cpu_seconds(int who = RUSAGE_SELF) {
  rusage u{};
  getrusage(who, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// CPU per iteration of sleeping until the next tick alone: the sender's share to subtract.
double timer_cost(int n, std::chrono::microseconds gap) {
  double c0 = cpu_seconds(RUSAGE_THREAD);
  auto t = Clock::now();
  for (int i = 0; i < n; ++i) {
    t += gap;
    std::this_thread::sleep_until(t);
  }
  return (cpu_seconds(RUSAGE_THREAD) - c0) / n;
}

[[noreturn]] void die(const char* what) {
  std::perror(what);
  std::exit(1);
}

// Returns {sender, receiver} CPU seconds per message.
std::pair<double, double> tcp_messages(int n, std::chrono::microseconds gap, size_t size) {
  int ls = socket(AF_INET, SOCK_STREAM, 0);
  if (ls < 0) die("socket");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (bind(ls, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(ls, 1) != 0 ||
      getsockname(ls, reinterpret_cast<sockaddr*>(&a), &len) != 0)
    die("listen on loopback");
  int report[2];
  if (pipe(report) != 0) die("pipe");
  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {  // the receiver: asleep in epoll_wait until each message comes
    int s = accept(ls, nullptr, nullptr);
    int ep = epoll_create1(0);
    epoll_event ev{};
    ev.events = EPOLLIN;
    epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
    std::string buf(65536, '\0');
    size_t got = 0;
    double c0 = cpu_seconds();
    while (got < static_cast<size_t>(n) * size) {
      epoll_event e{};
      if (epoll_wait(ep, &e, 1, -1) < 0) continue;
      ssize_t r = read(s, buf.data(), buf.size());
      if (r <= 0) break;
      got += static_cast<size_t>(r);
    }
    double per = (cpu_seconds() - c0) / n;
    if (write(report[1], &per, sizeof per) != sizeof per) _exit(1);
    _exit(0);
  }
  close(report[1]);
  int s = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) die("connect");
  int one = 1;
  setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  std::string msg(size, 'x');
  double c0 = cpu_seconds(RUSAGE_THREAD);
  auto t = Clock::now();
  for (int i = 0; i < n; ++i) {
    t += gap;
    std::this_thread::sleep_until(t);
    if (write(s, msg.data(), msg.size()) != static_cast<ssize_t>(msg.size())) die("write");
  }
  double sender = (cpu_seconds(RUSAGE_THREAD) - c0) / n;
  double receiver = 0;
  if (read(report[0], &receiver, sizeof receiver) != sizeof receiver) die("receiver's report");
  waitpid(pid, nullptr, 0);
  close(s);
  close(ls);
  close(report[0]);
  return {sender, receiver};
}

// Returns {signaller, woken thread} CPU seconds per hand-off.
std::pair<double, double> handoffs(int n, std::chrono::microseconds gap) {
  std::mutex mu;
  std::condition_variable cv;
  int posted = 0, taken = 0;
  double woken_cpu = 0;
  std::thread worker([&] {
    double c0 = cpu_seconds(RUSAGE_THREAD);
    std::unique_lock lk(mu);
    while (taken < n) {
      cv.wait(lk, [&] { return posted > taken; });
      taken = posted;
    }
    woken_cpu = (cpu_seconds(RUSAGE_THREAD) - c0) / n;
  });
  double c0 = cpu_seconds(RUSAGE_THREAD);
  auto t = Clock::now();
  for (int i = 0; i < n; ++i) {
    t += gap;
    std::this_thread::sleep_until(t);
    {
      std::lock_guard lk(mu);
      ++posted;
    }
    cv.notify_one();
  }
  double signaller = (cpu_seconds(RUSAGE_THREAD) - c0) / n;
  worker.join();
  return {signaller, woken_cpu};
}

double syncs(int n, const std::string& dir) {
  std::string path = dir + "/kos-bench-floor.XXXXXX";
  int fd = mkstemp(path.data());
  if (fd < 0) die("mkstemp in --dir");
  unlink(path.c_str());
  std::string page(4096, 'k');
  double c0 = cpu_seconds(RUSAGE_THREAD);
  for (int i = 0; i < n; ++i) {
    if (write(fd, page.data(), page.size()) != static_cast<ssize_t>(page.size())) die("write");
    if (fdatasync(fd) != 0) die("fdatasync");
  }
  double per = (cpu_seconds(RUSAGE_THREAD) - c0) / n;
  close(fd);
  return per;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"What this machine charges per message, thread hand-off and fdatasync (KOS's floor)."};
  int n = 20000;
  int gap_us = 200;
  int syncs_n = 2000;
  std::string dir = "/var/tmp";
  app.add_option("--count", n, "messages and hand-offs measured")->capture_default_str();
  app.add_option("--gap-us", gap_us, "microseconds between two (the other side sleeps in between)")
      ->capture_default_str();
  app.add_option("--syncs", syncs_n, "fdatasyncs measured")->capture_default_str();
  app.add_option("--dir", dir, "where the fdatasync file goes (the store's disk)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  const auto gap = std::chrono::microseconds(gap_us);

  const double timer = timer_cost(n, gap);
  auto [tx, rx] = tcp_messages(n, gap, 1024);
  auto [sig, woken] = handoffs(n, gap);
  const double sync = syncs(syncs_n, dir);
  std::printf("Machine floor (%u cores, one at a time every %d us; CPU = user + system)\n",
              std::thread::hardware_concurrency(), gap_us);
  std::printf("  1 KiB message over loopback TCP to a sleeping process: %.1f us (send %.1f + wake and read %.1f)\n",
              (tx - timer + rx) * 1e6, (tx - timer) * 1e6, rx * 1e6);
  std::printf("  hand-off to a sleeping thread (condition variable):    %.1f us (signal %.1f + wake %.1f)\n",
              (sig - timer + woken) * 1e6, (sig - timer) * 1e6, woken * 1e6);
  std::printf("  fdatasync of an appended 4 KiB page in %s:        %.1f us\n", dir.c_str(), sync * 1e6);
  std::printf("  (the sender's own timer wake-up, %.1f us each, is taken out)\n", timer * 1e6);
  return 0;
}
