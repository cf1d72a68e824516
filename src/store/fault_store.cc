#include "store/fault_store.h"

#include <algorithm>
#include <atomic>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

namespace kos::store {

using Steady = std::chrono::steady_clock;
using namespace std::chrono_literals;

struct FaultStore::State {
  mutable std::mutex mu;
  std::vector<Fault> faults;
  uint64_t fired = 0;
  int delaying = 0;  // calls sleeping a fault's delay now
  std::chrono::milliseconds watch_delay{0};
  std::string watch_delay_prefix;  // the watches it applies to
  bool held = false;
  uint64_t break_epoch = 0;
  Error break_error;
};

namespace {

class FaultWatch final : public Watch {
 public:
  FaultWatch(std::unique_ptr<Watch> inner, std::shared_ptr<FaultStore::State> state, uint64_t epoch,
             Revision after, std::string prefix)
      : inner_(std::move(inner)), state_(std::move(state)), epoch_(epoch), progress_(after), prefix_(std::move(prefix)) {}

  Result<std::vector<Event>> next(std::chrono::milliseconds timeout) override {
    const auto deadline = Steady::now() + timeout;
    while (true) {
      std::chrono::milliseconds delay;
      bool held;
      {
        std::lock_guard lk(state_->mu);
        if (state_->break_epoch > epoch_) return fail(state_->break_error);
        delay = prefix_.starts_with(state_->watch_delay_prefix) ? state_->watch_delay : 0ms;
        held = state_->held;
      }
      const auto now = Steady::now();
      if (!held) {
        // Pull what the inner watch has (without waiting when events are pending here).
        auto wait = pending_.empty() ? std::min<std::chrono::milliseconds>(timeout, 50ms) : 0ms;
        auto batch = inner_->next(wait);
        if (!batch) return fail(batch.error());
        for (auto& e : *batch) pending_.push_back({Steady::now(), std::move(e)});
        inner_progress_ = inner_->progress();
        bool held_now;
        {
          // The delay and the hold as they are now (not as before the pull, which may have
          // waited): an event that arrives after set_watch_delay() or hold_watches(true) is
          // held back.
          std::lock_guard lk(state_->mu);
          delay = prefix_.starts_with(state_->watch_delay_prefix) ? state_->watch_delay : 0ms;
          held_now = state_->held;
        }
        std::vector<Event> out;
        while (!held_now && !pending_.empty() && pending_.front().arrived + delay <= Steady::now()) {
          out.push_back(std::move(pending_.front().event));
          pending_.pop_front();
        }
        // Every event up to the inner progress was returned, unless some are held back.
        progress_ = pending_.empty() ? std::max(progress_, inner_progress_)
                                     : std::max(progress_, pending_.front().event.revision() - 1);
        if (!out.empty() || progress_requested_.exchange(false)) return out;
      }
      if (now >= deadline) return std::vector<Event>{};
      std::this_thread::sleep_for(std::min<Steady::duration>(10ms, deadline - now));
    }
  }

  Revision progress() const override { return progress_; }
  bool request_progress() override {
    progress_requested_ = true;
    return inner_->request_progress();
  }

 private:
  struct Pending {
    Steady::time_point arrived;
    Event event;
  };
  std::unique_ptr<Watch> inner_;
  std::shared_ptr<FaultStore::State> state_;
  const uint64_t epoch_;
  std::deque<Pending> pending_;
  Revision inner_progress_ = 0;
  Revision progress_ = 0;
  std::atomic<bool> progress_requested_{false};
  const std::string prefix_;  // what it watches
};

}  // namespace

FaultStore::FaultStore(std::unique_ptr<Store> inner)
    : inner_(std::move(inner)), state_(std::make_shared<State>()) {}

FaultStore::~FaultStore() = default;

void FaultStore::inject(Fault f) {
  std::lock_guard lk(state_->mu);
  state_->faults.push_back(std::move(f));
}

void FaultStore::clear() {
  std::lock_guard lk(state_->mu);
  state_->faults.clear();
}

uint64_t FaultStore::fired() const {
  std::lock_guard lk(state_->mu);
  return state_->fired;
}

int FaultStore::delaying() const {
  std::lock_guard lk(state_->mu);
  return state_->delaying;
}

void FaultStore::set_watch_delay(std::chrono::milliseconds d, std::string prefix) {
  std::lock_guard lk(state_->mu);
  state_->watch_delay = d;
  state_->watch_delay_prefix = std::move(prefix);
}

void FaultStore::hold_watches(bool held) {
  std::lock_guard lk(state_->mu);
  state_->held = held;
}

void FaultStore::break_watches(Error e) {
  std::lock_guard lk(state_->mu);
  ++state_->break_epoch;
  state_->break_error = std::move(e);
}

std::optional<Fault> FaultStore::hit(StoreOp op, const std::string& key) {
  std::optional<Fault> f;
  {
    std::lock_guard lk(state_->mu);
    for (auto it = state_->faults.begin(); it != state_->faults.end(); ++it) {
      if (it->op != op || !key.starts_with(it->key_prefix)) continue;
      f = *it;
      ++state_->fired;
      // Counted as delaying from here (under the lock that counts it as fired) until its
      // delay is over; a delay after the call applies to reads that call through.
      const bool after = it->delay_after;
      if (it->delay.count() > 0 && (!after || ((op == StoreOp::kGet || op == StoreOp::kList) && !it->error)))
        ++state_->delaying;
      else
        f->delay = std::chrono::milliseconds(0);
      if (it->times > 0 && --it->times == 0) state_->faults.erase(it);
      break;
    }
  }
  if (f && f->delay.count() > 0 && !f->delay_after) {
    std::this_thread::sleep_for(f->delay);
    std::lock_guard lk(state_->mu);
    --state_->delaying;
  }
  return f;
}

void FaultStore::delay_after(const std::optional<Fault>& f) {
  if (!f || !f->delay_after || f->delay.count() == 0) return;
  std::this_thread::sleep_for(f->delay);
  std::lock_guard lk(state_->mu);
  --state_->delaying;
}

Result<KeyValue> FaultStore::get(const std::string& key, Revision rev) {
  auto f = hit(StoreOp::kGet, key);
  if (f && f->error) return fail(*f->error);
  auto r = inner_->get(key, rev);
  delay_after(f);
  return r;
}

Result<ListResult> FaultStore::list(const std::string& prefix, const ListOptions& opts) {
  auto f = hit(StoreOp::kList, prefix);
  if (f && f->error) return fail(*f->error);
  auto r = inner_->list(prefix, opts);
  delay_after(f);
  return r;
}

namespace {
// A write's fault: fail before it (not applied) or after it (applied, reply lost).
template <class F>
auto write_with(const std::optional<Fault>& f, F&& write) -> decltype(write()) {
  if (!f || !f->error) return write();
  if (f->after_applying) (void)write();
  return fail(*f->error);
}
}  // namespace

Result<KeyValue> FaultStore::create(const std::string& key, const std::string& value) {
  return write_with(hit(StoreOp::kCreate, key), [&] { return inner_->create(key, value); });
}

Result<KeyValue> FaultStore::update(const std::string& key, const std::string& value,
                                    Revision expected_mod_revision) {
  return write_with(hit(StoreOp::kUpdate, key),
                    [&] { return inner_->update(key, value, expected_mod_revision); });
}

Result<KeyValue> FaultStore::remove(const std::string& key, Revision expected_mod_revision,
                                    Revision* deleted_at) {
  return write_with(hit(StoreOp::kRemove, key),
                    [&] { return inner_->remove(key, expected_mod_revision, deleted_at); });
}

Result<std::unique_ptr<Watch>> FaultStore::watch(const std::string& prefix, Revision after, const WatchOptions& opts) {
  if (auto f = hit(StoreOp::kWatch, prefix); f && f->error) return fail(*f->error);
  uint64_t epoch;
  {
    std::lock_guard lk(state_->mu);
    epoch = state_->break_epoch;
  }
  auto w = inner_->watch(prefix, after, opts);
  if (!w) return fail(w.error());
  const Revision start = after != 0 ? after : (*w)->progress();
  return std::unique_ptr<Watch>(std::make_unique<FaultWatch>(std::move(*w), state_, epoch, start, prefix));
}

Result<void> FaultStore::compact(Revision rev) {
  if (auto f = hit(StoreOp::kCompact, ""); f && f->error) return fail(*f->error);
  return inner_->compact(rev);
}

Result<Revision> FaultStore::current_revision() {
  if (auto f = hit(StoreOp::kCurrentRevision, ""); f && f->error) return fail(*f->error);
  return inner_->current_revision();
}

}  // namespace kos::store
