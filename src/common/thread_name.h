// Named threads: a thread's name shows in `top -H`, `perf report --sort comm` and
// /proc/PID/task/*/comm, so the threads of a component can be told apart when measuring
// it. Linux keeps 15 bytes; longer names are cut.
#pragma once

#include <pthread.h>

#include <algorithm>
#include <string>
#include <thread>
#include <utility>

namespace kos {

// A thread named `name` that runs fn().
template <class F>
std::thread named_thread(std::string name, F fn) {
  return std::thread([name = std::move(name), fn = std::move(fn)]() mutable {
    name.resize(std::min<size_t>(name.size(), 15));
    pthread_setname_np(pthread_self(), name.c_str());
    fn();
  });
}

}  // namespace kos
