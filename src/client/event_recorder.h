// Records core/v1 Events about objects, for `kubectl describe` and `kubectl get events`.
// Repeats of the same event (same object, type, reason and message) within ten minutes are
// aggregated: the existing Event's count and lastTimestamp are updated instead of creating
// another. Recording never blocks the caller: events go to a bounded queue written by a
// thread of the recorder's own; when the queue is full, events are dropped (and counted).
#pragma once

#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "api/types.h"
#include "client/rest_client.h"
#include "common/clock.h"

namespace kos::client {

class EventRecorder {
 public:
  EventRecorder(std::shared_ptr<RestClient> client, std::string component, std::string host = {},
                const Clock& clock = RealClock::instance(), size_t queue_limit = 1000);
  ~EventRecorder();  // writes what is queued, then stops

  // type is "Normal" or "Warning"; reason is a short CamelCase word.
  void event(const api::AnyObject& about, const std::string& type, const std::string& reason,
             const std::string& message);

  // Waits until everything queued so far has been written (for tests and shutdown).
  void flush();
  uint64_t dropped() const;
  uint64_t written() const;

 private:
  struct Pending {
    std::string ns, kind, name, uid, resource_version;
    std::string type, reason, message;
    std::chrono::system_clock::time_point at;
  };
  struct Seen {
    std::string event_name;
    int64_t count = 0;
    std::chrono::system_clock::time_point last;
  };
  void run();
  void write(const Pending& p);

  std::shared_ptr<RestClient> client_;
  std::string component_, host_;
  const Clock& clock_;
  size_t limit_;
  mutable std::mutex mu_;
  std::condition_variable cv_, idle_cv_;
  std::deque<Pending> queue_;
  bool busy_ = false;
  bool stopping_ = false;
  uint64_t dropped_ = 0, written_ = 0;
  std::map<std::string, Seen> seen_;  // aggregation key -> the Event that holds it
  std::thread thread_;
};

}  // namespace kos::client
