// Names the calling thread (as `top -H`, `perf report --sort comm` and /proc/PID/task/*/comm
// show it), so the threads of a component can be told apart when measuring it. Linux keeps
// 15 bytes; longer names are cut.
#pragma once

#include <pthread.h>

#include <string>
#include <string_view>

namespace kos {

inline void name_this_thread(std::string_view name) {
  std::string n(name.substr(0, 15));
  pthread_setname_np(pthread_self(), n.c_str());
}

}  // namespace kos
