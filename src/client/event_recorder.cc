#include "client/event_recorder.h"

#include <cstdio>

#include <spdlog/spdlog.h>

namespace kos::client {
namespace json = boost::json;

namespace {
constexpr auto kAggregationWindow = std::chrono::minutes(10);
constexpr size_t kMaxSeen = 4096;

std::string micro(std::chrono::system_clock::time_point t) {
  return api::format_micro_time(std::chrono::time_point_cast<std::chrono::microseconds>(t));
}
}  // namespace

EventRecorder::EventRecorder(std::shared_ptr<RestClient> client, std::string component,
                             std::string host, const Clock& clock, size_t queue_limit)
    : client_(std::move(client)), component_(std::move(component)), host_(std::move(host)),
      clock_(clock), limit_(queue_limit) {
  thread_ = std::thread([this] { run(); });
}

EventRecorder::~EventRecorder() {
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void EventRecorder::event(const api::AnyObject& about, const std::string& type,
                          const std::string& reason, const std::string& message) {
  const auto& m = api::meta(about);
  Pending p{m.namespace_, std::string(api::kind_info(api::kind_of(about)).name), m.name, m.uid,
            m.resource_version, type, reason, message, clock_.now()};
  std::lock_guard lk(mu_);
  if (queue_.size() >= limit_) {
    ++dropped_;
    return;
  }
  queue_.push_back(std::move(p));
  cv_.notify_one();
}

void EventRecorder::flush() {
  std::unique_lock lk(mu_);
  idle_cv_.wait(lk, [&] { return queue_.empty() && !busy_; });
}

uint64_t EventRecorder::dropped() const {
  std::lock_guard lk(mu_);
  return dropped_;
}

uint64_t EventRecorder::written() const {
  std::lock_guard lk(mu_);
  return written_;
}

void EventRecorder::run() {
  std::unique_lock lk(mu_);
  while (true) {
    cv_.wait(lk, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, and everything is written
    Pending p = std::move(queue_.front());
    queue_.pop_front();
    busy_ = true;
    lk.unlock();
    write(p);
    lk.lock();
    busy_ = false;
    ++written_;
    if (queue_.empty()) idle_cv_.notify_all();
  }
}

void EventRecorder::write(const Pending& p) {
  const auto ref = ResourceRef::events();
  std::string key = p.uid + "\x1f" + p.type + "\x1f" + p.reason + "\x1f" + p.message;
  auto it = seen_.find(key);
  if (it != seen_.end() && p.at - it->second.last < kAggregationWindow) {
    json::object patch{{"count", it->second.count + 1}, {"lastTimestamp", micro(p.at)}};
    auto r = client_->patch(ref, p.ns, it->second.event_name, PatchType::kMerge, patch);
    if (r) {
      ++it->second.count;
      it->second.last = p.at;
      return;
    }
    // The Event is gone (deleted, expired): record a new one.
    seen_.erase(it);
  }
  char suffix[32];
  std::snprintf(suffix, sizeof suffix, ".%llx",
                static_cast<unsigned long long>(
                    std::chrono::duration_cast<std::chrono::nanoseconds>(p.at.time_since_epoch()).count()));
  std::string name = p.name + suffix;
  json::object ev{
      {"apiVersion", "v1"},
      {"kind", "Event"},
      {"metadata", json::object{{"name", name}, {"namespace", p.ns}}},
      {"involvedObject", json::object{{"apiVersion", std::string(api::kApiVersion)},
                                      {"kind", p.kind},
                                      {"name", p.name},
                                      {"namespace", p.ns},
                                      {"uid", p.uid},
                                      {"resourceVersion", p.resource_version}}},
      {"reason", p.reason},
      {"message", p.message},
      {"type", p.type},
      {"source", json::object{{"component", component_}, {"host", host_}}},
      {"firstTimestamp", micro(p.at)},
      {"lastTimestamp", micro(p.at)},
      {"count", 1},
      {"reportingComponent", component_},
      {"reportingInstance", host_}};
  auto r = client_->create(ref, p.ns, ev);
  if (!r) {
    spdlog::warn("events: cannot record {} {} on {}/{}: {}", p.type, p.reason, p.ns, p.name,
                 r.error().message);
    return;
  }
  if (seen_.size() >= kMaxSeen) seen_.clear();
  seen_[key] = Seen{name, 1, p.at};
}

}  // namespace kos::client
