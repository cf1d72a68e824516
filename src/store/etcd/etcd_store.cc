#include "store/etcd/etcd_store.h"

#include <grpcpp/grpcpp.h>
#include <pthread.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <condition_variable>
#include <deque>
#include <limits>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>

#include "etcdserverpb/rpc.grpc.pb.h"

namespace kos::store {
namespace {

namespace pb = etcdserverpb;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// A watch whose consumer falls behind stops reading its stream once this many events or
// bytes are queued (etcd then holds the rest; if it compacts them meanwhile, next() says
// kCompacted).
constexpr size_t kMaxQueuedEvents = 64 * 1024;
constexpr size_t kMaxQueuedBytes = 64 << 20;
// Backoff between rounds of calls that reached a connected endpoint and failed anyway.
constexpr milliseconds kFirstRetryBackoff{10};
constexpr milliseconds kMaxRetryBackoff{500};
// With several endpoints all failing, how long each round waits for its last endpoint.
constexpr milliseconds kFirstRoundWait{50};
constexpr milliseconds kMaxRoundWait{1000};
// Backoff between watch stream attempts (a watch never gives up on an unreachable etcd).
constexpr milliseconds kFirstWatchBackoff{50};
constexpr milliseconds kMaxWatchBackoff{1000};
// A watch without a stream says so this often while it stays down.
constexpr milliseconds kWatchDownLogInterval{30000};
// Endpoint failures are logged at most this often per store (64 writers hit them at once).
constexpr milliseconds kFailureLogInterval{1000};

struct Endpoint {
  std::string url;     // as configured, for messages
  std::string target;  // gRPC target "HOST:PORT"
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<pb::KV::Stub> kv;
  std::unique_ptr<pb::Watch::Stub> watch;
};

gpr_timespec grpc_deadline(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
  return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                      gpr_time_from_millis(std::max<int64_t>(left, 0), GPR_TIMESPAN));
}

std::string_view code_name(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::UNKNOWN: return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED: return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS: return "DATA_LOSS";
    default: return "UNRECOGNIZED";
  }
}

// Failures that say "this endpoint did not answer", as opposed to an answer from etcd.
bool is_endpoint_failure(const grpc::Status& s) {
  return s.error_code() == grpc::StatusCode::UNAVAILABLE ||
         s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
}

// Failures gRPC reports when a call found no connection to send itself on, so etcd cannot
// have seen it (a write may be retried elsewhere). Anything else after the call was started
// (a reset connection, "Socket closed", an etcd "leader changed") is ambiguous for a write.
bool never_sent(const grpc::Status& s) {
  if (s.error_code() != grpc::StatusCode::UNAVAILABLE) return false;
  const std::string& m = s.error_message();
  return m.starts_with("failed to connect to all addresses") ||
         m.find("Connection refused") != std::string::npos;
}

bool is_compacted(const grpc::Status& s) {
  return s.error_code() == grpc::StatusCode::OUT_OF_RANGE &&
         s.error_message().find("compacted") != std::string::npos;
}

bool is_future_revision(const grpc::Status& s) {
  return s.error_code() == grpc::StatusCode::OUT_OF_RANGE &&
         s.error_message().find("future revision") != std::string::npos;
}

Error to_error(const grpc::Status& s, std::string_view op, std::string_view key) {
  Errc code = Errc::kInternal;
  switch (s.error_code()) {
    case grpc::StatusCode::OUT_OF_RANGE:
      code = is_compacted(s) ? Errc::kCompacted : Errc::kInvalid;
      break;
    case grpc::StatusCode::INVALID_ARGUMENT: code = Errc::kBadRequest; break;
    case grpc::StatusCode::NOT_FOUND: code = Errc::kNotFound; break;
    case grpc::StatusCode::ALREADY_EXISTS: code = Errc::kAlreadyExists; break;
    // "too many requests", "database space exceeded": try again later.
    case grpc::StatusCode::RESOURCE_EXHAUSTED: code = Errc::kUnavailable; break;
    case grpc::StatusCode::UNAVAILABLE: code = Errc::kUnavailable; break;
    case grpc::StatusCode::DEADLINE_EXCEEDED: code = Errc::kTimeout; break;
    case grpc::StatusCode::CANCELLED: code = Errc::kCancelled; break;
    case grpc::StatusCode::UNIMPLEMENTED: code = Errc::kUnsupported; break;
    default: code = Errc::kInternal; break;
  }
  std::string msg = "etcd " + std::string(op);
  if (!key.empty()) msg += " key=" + std::string(key);
  msg += ": " + s.error_message() + " (grpc " + std::string(code_name(s.error_code())) + ")";
  return Error{code, std::move(msg), {}};
}

KeyValue from_pb(const mvccpb::KeyValue& kv) {
  return KeyValue{kv.key(), kv.value(), kv.create_revision(), kv.mod_revision(), kv.version()};
}

Event from_pb(const mvccpb::Event& ev) {
  Event out;
  out.type = ev.type() == mvccpb::Event::DELETE ? Event::Type::kDelete : Event::Type::kPut;
  out.kv = from_pb(ev.kv());
  if (ev.has_prev_kv()) out.prev = from_pb(ev.prev_kv());
  return out;
}

// The gRPC target of an endpoint URL. https:// needs TLS settings, http:// must not have
// them (a cluster is all TLS or none).
Result<std::string> grpc_target(const std::string& url, bool tls) {
  std::string_view rest = url;
  if (rest.starts_with("https://")) {
    if (!tls)
      return fail(Errc::kInvalid, "etcd endpoint " + url + ": https needs the etcd CA (--etcd-cafile)");
    rest.remove_prefix(8);
  } else if (rest.starts_with("http://")) {
    if (tls)
      return fail(Errc::kInvalid, "etcd endpoint " + url + ": TLS settings are given, so use https://");
    rest.remove_prefix(7);
  } else if (rest.find("://") != std::string_view::npos) {
    return fail(Errc::kInvalid, "etcd endpoint " + url + ": scheme must be http:// or https://");
  }
  while (rest.ends_with('/')) rest.remove_suffix(1);
  auto colon = rest.rfind(':');
  if (rest.empty() || colon == std::string_view::npos || colon == 0 ||
      colon + 1 == rest.size() || rest.find('/') != std::string_view::npos) {
    return fail(Errc::kInvalid, "etcd endpoint " + url + ": expected http://HOST:PORT");
  }
  return std::string(rest);
}

std::shared_ptr<grpc::Channel> make_channel(const std::string& target,
                                           const std::optional<OpenOptions::EtcdTls>& tls) {
  grpc::ChannelArguments args;
  // A list of many objects can be larger than gRPC's 4 MiB default (etcd's own client does
  // the same).
  args.SetMaxReceiveMessageSize(INT_MAX);
  // Each store its own connections, as separate etcd clients would have.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  // Reconnect quickly after an etcd restart (gRPC's default backoff grows to 120 s).
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  // Detect a dead peer under an idle watch stream (same values as the Kubernetes API
  // server's etcd client). Pings only while a call is open: etcd's default enforcement
  // policy closes connections that ping without streams or more often than every 5 s.
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 0);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  if (!tls) return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
  grpc::SslCredentialsOptions so;
  so.pem_root_certs = tls->ca_pem;
  so.pem_private_key = tls->key_pem;
  so.pem_cert_chain = tls->cert_pem;
  return grpc::CreateCustomChannel(target, grpc::SslCredentials(so), args);
}

pb::Compare* add_guard(pb::TxnRequest& txn, const std::string& key, Revision expected) {
  auto* cmp = txn.add_compare();
  cmp->set_key(key);
  cmp->set_target(pb::Compare::MOD);
  if (expected != 0) {
    cmp->set_result(pb::Compare::EQUAL);
    cmp->set_mod_revision(expected);
  } else {  // must exist: an absent key compares as mod_revision 0
    cmp->set_result(pb::Compare::GREATER);
    cmp->set_mod_revision(0);
  }
  return cmp;
}

// The error for a failed update/remove guard, from the key's current state (the Else
// branch's Range).
Error guard_error(const pb::TxnResponse& resp, std::string_view op, const std::string& key,
                  Revision expected) {
  const pb::RangeResponse* current = nullptr;
  if (resp.responses_size() > 0 && resp.responses(0).has_response_range()) {
    current = &resp.responses(0).response_range();
  }
  if (current == nullptr || current->kvs_size() == 0) {
    return Error{Errc::kNotFound, "etcd " + std::string(op) + ": key not found key=" + key, {}};
  }
  return Error{Errc::kConflict,
               "etcd " + std::string(op) + ": mod revision mismatch key=" + key +
                   " expected=" + std::to_string(expected) +
                   " actual=" + std::to_string(current->kvs(0).mod_revision()),
               {}};
}

// What a Watch and its reader thread share.
struct WatchState {
  std::string prefix;
  std::string key;        // WatchCreateRequest.key
  std::string range_end;  // WatchCreateRequest.range_end
  bool prev_kv = true;    // WatchCreateRequest.prev_kv

  std::atomic<bool> stopping{false};
  std::mutex mu;
  std::condition_variable readable;  // events or a terminal error to hand to next()
  std::condition_variable writable;  // queue space for the reader, or stopping
  std::deque<Event> queue;
  size_t queued_bytes = 0;
  std::optional<Error> error;            // terminal; reported after the queue is drained
  grpc::ClientContext* stream = nullptr;  // the open stream, to cancel it
  Revision next_revision = 0;             // start_revision of the next stream

  // Ends the watch: the reader thread stops, next() reports `why` (if set, and no earlier
  // error) once the queue is empty.
  void finish(std::optional<Error> why) {
    std::lock_guard lk(mu);
    if (why && !error) error = std::move(why);
    stopping = true;
    if (stream) stream->TryCancel();
    readable.notify_all();
    writable.notify_all();
  }
};

}  // namespace

class EtcdStore::Client {
 public:
  Client(std::vector<Endpoint> endpoints, OpenOptions opts)
      : endpoints_(std::move(endpoints)), opts_(opts) {}

  const OpenOptions& options() const { return opts_; }
  Clock::time_point request_deadline() const { return Clock::now() + opts_.request_timeout; }
  std::string endpoint_list() const {
    std::string out;
    for (const auto& ep : endpoints_) out += (out.empty() ? "" : ",") + ep.url;
    return out;
  }

  // Runs fn(endpoint, context) -> grpc::Status against the current endpoint, moving on to
  // the next endpoint on failure (see the header for the retry rules). `write`: the call
  // is not idempotent. Returns the last status.
  template <class Fn>
  grpc::Status call(std::string_view op, const std::string& key, bool write,
                    Clock::time_point deadline, Fn&& fn) {
    const size_t n = endpoints_.size();
    auto round_wait = kFirstRoundWait;
    auto backoff = kFirstRetryBackoff;
    grpc::Status status;
    for (size_t attempt = 1;; ++attempt) {
      const size_t idx = current_.load(std::memory_order_relaxed);
      Endpoint& ep = endpoints_[idx];
      // The last endpoint of a round is waited for even if its last connection attempt
      // failed (so that a restarting single etcd is picked up as soon as it is back); with
      // several endpoints only for a while, then the round starts over.
      const bool last_of_round = attempt % n == 0;
      auto connect_deadline = std::min(deadline, Clock::now() + opts_.dial_timeout);
      if (last_of_round && n > 1) {
        connect_deadline = std::min(connect_deadline, Clock::now() + round_wait);
        round_wait = std::min(round_wait * 2, kMaxRoundWait);
      }
      bool called = false, maybe_applied = false;
      if (!wait_connected(ep, connect_deadline, /*through_failure=*/last_of_round)) {
        status = grpc::Status(grpc::StatusCode::UNAVAILABLE,
                              "no connection to etcd endpoint " + ep.url);
      } else {
        grpc::ClientContext ctx;
        ctx.set_deadline(grpc_deadline(deadline));
        status = fn(ep, ctx);
        if (status.ok() || !is_endpoint_failure(status)) return status;
        called = true;
        maybe_applied = write && !never_sent(status);
      }
      endpoint_failed(idx, op, key, status);
      if (maybe_applied || Clock::now() >= deadline) return status;
      if (called && last_of_round) {
        // Connected, yet the call failed at once ("etcdserver: leader changed", a connection
        // that just died): do not hammer the cluster.
        auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
        std::this_thread::sleep_for(std::clamp(left, milliseconds(0), backoff));
        backoff = std::min(backoff * 2, kMaxRetryBackoff);
      }
    }
  }

  // The body of a watch's reader thread: streams until the watch is finished (stopped,
  // compacted, or canceled by etcd). An unreachable etcd does not finish it: the stream is
  // re-created from w.next_revision, with backoff, for as long as the outage lasts.
  void run_watch(WatchState& w) {
    auto backoff = kFirstWatchBackoff;
    // Since when the watch has had no working stream, and when to say it is still down.
    auto down_since = Clock::now();
    auto next_down_log = down_since + kWatchDownLogInterval;
    bool resuming = false;
    for (size_t attempt = 1; !w.stopping; ++attempt) {
      const size_t idx = current_.load(std::memory_order_relaxed);
      Endpoint& ep = endpoints_[idx];
      bool established = false;
      grpc::Status status;
      // As in call(): skip failing endpoints, except the last one of a round.
      const bool last_of_round = attempt % endpoints_.size() == 0;
      if (!wait_connected(ep, Clock::now() + opts_.dial_timeout, last_of_round, &w.stopping)) {
        status = grpc::Status(grpc::StatusCode::UNAVAILABLE,
                              "no connection to etcd endpoint " + ep.url);
      } else {
        status = stream_once(ep, w, resuming, down_since, established);
      }
      if (w.stopping) break;
      Revision from = 0;
      {
        std::lock_guard lk(w.mu);
        from = w.next_revision;
      }
      const auto now = Clock::now();
      if (established) {
        // A working stream broke: say so once; the attempts to resume log at debug level,
        // with a warning every kWatchDownLogInterval while they keep failing.
        down_since = now;
        next_down_log = now + kWatchDownLogInterval;
        backoff = kFirstWatchBackoff;
        spdlog::warn("etcd watch stream broken prefix={} endpoint={} resume_revision={} "
                     "code={} error=\"{}\"",
                     w.prefix, ep.url, from, code_name(status.error_code()),
                     status.error_message());
      } else {
        spdlog::debug("etcd watch attempt failed prefix={} endpoint={} resume_revision={} "
                      "code={} error=\"{}\"",
                      w.prefix, ep.url, from, code_name(status.error_code()),
                      status.error_message());
        if (now >= next_down_log) {
          next_down_log = now + kWatchDownLogInterval;
          spdlog::warn("etcd watch still down prefix={} down_for={}s resume_revision={} "
                       "endpoints={} code={} error=\"{}\"",
                       w.prefix, std::chrono::duration_cast<std::chrono::seconds>(
                                     now - down_since).count(),
                       from, endpoint_list(), code_name(status.error_code()),
                       status.error_message());
        }
      }
      resuming = true;
      // Silently: the lines above say what the watch sees (an outage is one line per 30 s,
      // not one per attempt).
      if (is_endpoint_failure(status)) next_endpoint(idx);
      std::unique_lock lk(w.mu);
      w.writable.wait_for(lk, backoff, [&] { return w.stopping.load(); });
      backoff = std::min(backoff * 2, kMaxWatchBackoff);
    }
  }

  void register_watch(const std::shared_ptr<WatchState>& w) {
    std::lock_guard lk(watches_mu_);
    std::erase_if(watches_, [](const auto& weak) { return weak.expired(); });
    watches_.push_back(w);
  }

  // The store is closing: every live watch ends with kCancelled.
  void shutdown() {
    std::vector<std::weak_ptr<WatchState>> watches;
    {
      std::lock_guard lk(watches_mu_);
      watches.swap(watches_);
    }
    for (auto& weak : watches) {
      if (auto w = weak.lock()) {
        w->finish(Error{Errc::kCancelled, "etcd watch prefix=" + w->prefix + ": store closed", {}});
      }
    }
  }

 private:
  // Waits until `ep` has a connection. Returns false at `deadline`, when `stop` is set, or,
  // unless `through_failure`, as soon as a connection attempt has failed (gRPC keeps
  // reconnecting in the background, with backoff). Waiting is what drives the connection
  // attempt: with the synchronous API a channel's I/O only progresses while some thread
  // waits on it (or every 5 s, gRPC's backup poller), so never poll the state by sleeping.
  static bool wait_connected(Endpoint& ep, Clock::time_point deadline, bool through_failure,
                             const std::atomic<bool>* stop = nullptr) {
    auto state = ep.channel->GetState(/*try_to_connect=*/true);
    while (state != GRPC_CHANNEL_READY) {
      if (state == GRPC_CHANNEL_SHUTDOWN) return false;
      if (state == GRPC_CHANNEL_TRANSIENT_FAILURE && !through_failure) return false;
      const auto now = Clock::now();
      if (now >= deadline || (stop && stop->load())) return false;
      // With a stop flag, wake up now and then to look at it.
      auto until = stop ? std::min(deadline, now + milliseconds(50)) : deadline;
      ep.channel->WaitForStateChange(state, grpc_deadline(until));
      state = ep.channel->GetState(true);
    }
    return true;
  }

  // Endpoint `idx` failed: the next one becomes current (unless another caller moved on
  // already). Returns the next one.
  size_t next_endpoint(size_t idx) {
    const size_t next = (idx + 1) % endpoints_.size();
    size_t expected = idx;
    current_.compare_exchange_strong(expected, next, std::memory_order_relaxed);
    return next;
  }

  // next_endpoint(), with a warning (at most one per kFailureLogInterval per store).
  void endpoint_failed(size_t idx, std::string_view op, const std::string& key,
                       const grpc::Status& status) {
    const size_t next = next_endpoint(idx);
    const auto now = Clock::now().time_since_epoch().count();
    auto last = last_failure_log_.load(std::memory_order_relaxed);
    if (now - last < std::chrono::duration_cast<Clock::duration>(kFailureLogInterval).count() ||
        !last_failure_log_.compare_exchange_strong(last, now, std::memory_order_relaxed)) {
      return;
    }
    spdlog::warn("etcd endpoint failed endpoint={} op={} key={} code={} error=\"{}\" next={}",
                 endpoints_[idx].url, op, key, code_name(status.error_code()),
                 status.error_message(), endpoints_[next].url);
  }

  // One Watch stream from w.next_revision. Returns when the stream ends, the watch is
  // finished, or etcd cancels it (then the watch is finished with the reason). `resuming`:
  // not the watch's first attempt; it has had no stream since `down_since`.
  grpc::Status stream_once(Endpoint& ep, WatchState& w, bool resuming,
                           Clock::time_point down_since, bool& established) {
    grpc::ClientContext ctx;
    // Ask etcd to end the stream if its member loses the leader, so that a partitioned
    // member does not silently starve the watch ("hasleader", as etcd's own client does).
    ctx.AddMetadata("hasleader", "true");
    pb::WatchRequest req;
    {
      std::lock_guard lk(w.mu);
      if (w.stopping) return grpc::Status::CANCELLED;
      w.stream = &ctx;
      auto* create = req.mutable_create_request();
      create->set_key(w.key);
      create->set_range_end(w.range_end);
      create->set_start_revision(w.next_revision);
      create->set_progress_notify(true);
      create->set_prev_kv(w.prev_kv);
    }
    auto stream = ep.watch->Watch(&ctx);
    bool cancel = false;
    if (stream->Write(req)) {
      pb::WatchResponse resp;
      while (!cancel && stream->Read(&resp)) {
        if (resp.canceled() || resp.compact_revision() != 0) {
          finish_canceled(w, resp);
          cancel = true;
        } else if (resp.created()) {
          if (resuming && !established) {
            const auto down_ms =
                std::chrono::duration_cast<milliseconds>(Clock::now() - down_since).count();
            spdlog::info("etcd watch resumed prefix={} endpoint={} start_revision={} "
                         "down_for={}ms",
                         w.prefix, ep.url, req.create_request().start_revision(), down_ms);
          }
          established = true;
        } else {
          cancel = !deliver(w, resp);
        }
      }
    }
    if (cancel || w.stopping) ctx.TryCancel();
    grpc::Status status = stream->Finish();
    std::lock_guard lk(w.mu);
    w.stream = nullptr;
    return status;
  }

  static void finish_canceled(WatchState& w, const pb::WatchResponse& resp) {
    Revision from = 0;
    {
      std::lock_guard lk(w.mu);
      from = w.next_revision;
    }
    if (resp.compact_revision() != 0) {
      w.finish(Error{Errc::kCompacted,
                     "etcd watch prefix=" + w.prefix + ": revision " + std::to_string(from) +
                         " has been compacted (compacted up to " +
                         std::to_string(resp.compact_revision()) + ")",
                     {}});
    } else {
      w.finish(Error{Errc::kInternal,
                     "etcd watch prefix=" + w.prefix + ": canceled by etcd: " +
                         resp.cancel_reason(),
                     {}});
    }
  }

  // Queues the events of one response (skipping any a previous stream already delivered)
  // and advances the resume revision. False when the watch was stopped meanwhile.
  static bool deliver(WatchState& w, const pb::WatchResponse& resp) {
    std::unique_lock lk(w.mu);
    if (resp.events_size() == 0) {
      // A progress notification: every event up to the header revision has been sent.
      w.next_revision = std::max(w.next_revision, resp.header().revision() + 1);
      return true;
    }
    w.writable.wait(lk, [&] {
      return w.queue.empty() || w.stopping ||
             (w.queue.size() < kMaxQueuedEvents && w.queued_bytes < kMaxQueuedBytes);
    });
    if (w.stopping) return false;
    // etcd never splits one revision over two responses (no fragment requested), so the
    // response is the unit: whatever is below next_revision came in an earlier response.
    Revision last = 0;
    for (const auto& ev : resp.events()) {
      const Revision rev = ev.kv().mod_revision();
      if (rev < w.next_revision) continue;
      w.queue.push_back(from_pb(ev));
      w.queued_bytes += ev.ByteSizeLong();
      last = std::max(last, rev);
    }
    if (last != 0) {
      w.next_revision = last + 1;
      w.readable.notify_all();
    }
    return true;
  }

  std::vector<Endpoint> endpoints_;
  const OpenOptions opts_;
  std::atomic<size_t> current_{0};
  std::atomic<Clock::rep> last_failure_log_{std::numeric_limits<Clock::rep>::min() / 2};
  std::mutex watches_mu_;
  std::vector<std::weak_ptr<WatchState>> watches_;
};

namespace {

class EtcdWatch final : public Watch {
 public:
  EtcdWatch(std::shared_ptr<EtcdStore::Client> client, std::shared_ptr<WatchState> state)
      : state_(std::move(state)) {
    progress_ = state_->next_revision - 1;
    // The thread owns the client too: the watch may outlive the store.
    thread_ = std::thread([client = std::move(client), state = state_] {
      pthread_setname_np(pthread_self(), "kos-etcd-watch");
      client->run_watch(*state);
    });
  }

  ~EtcdWatch() override {
    state_->finish(std::nullopt);
    thread_.join();
  }

  Result<std::vector<Event>> next(std::chrono::milliseconds timeout) override {
    std::unique_lock lk(state_->mu);
    state_->readable.wait_for(lk, timeout,
                              [&] { return !state_->queue.empty() || state_->error; });
    // Everything below next_revision has been queued; what is queued is returned now.
    progress_ = state_->next_revision - 1;
    if (!state_->queue.empty()) {
      std::vector<Event> out(std::make_move_iterator(state_->queue.begin()),
                             std::make_move_iterator(state_->queue.end()));
      state_->queue.clear();
      state_->queued_bytes = 0;
      state_->writable.notify_all();
      return out;
    }
    if (state_->error) return fail(*state_->error);
    return std::vector<Event>{};
  }

  Revision progress() const override { return progress_; }

 private:
  std::shared_ptr<WatchState> state_;
  std::thread thread_;
  Revision progress_ = 0;
};

// A one-key count-only Range: the cheapest linearizable read (for the header revision).
pb::RangeRequest probe_request(const std::string& key, Revision rev = 0) {
  pb::RangeRequest req;
  req.set_key(key.empty() ? std::string(1, '\0') : key);
  req.set_revision(rev);
  req.set_count_only(true);
  return req;
}

}  // namespace

EtcdStore::EtcdStore(std::shared_ptr<Client> client) : client_(std::move(client)) {}

EtcdStore::~EtcdStore() { client_->shutdown(); }

Result<std::vector<std::string>> EtcdStore::parse_endpoints(std::string_view list) {
  std::vector<std::string> out;
  while (true) {
    auto comma = list.find(',');
    std::string_view item = list.substr(0, comma);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    if (item.empty()) {
      return fail(Errc::kInvalid, "etcd endpoint list \"" + std::string(list) +
                                      "\" has an empty element");
    }
    out.emplace_back(item);
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return out;
}

Result<std::unique_ptr<Store>> EtcdStore::open(const std::vector<std::string>& endpoints,
                                               const OpenOptions& opts) {
  if (endpoints.empty()) return fail(Errc::kInvalid, "etcd: no endpoints given");
  std::vector<Endpoint> eps;
  for (const auto& url : endpoints) {
    auto target = grpc_target(url, opts.etcd_tls.has_value());
    if (!target) return fail(target.error());
    Endpoint ep;
    ep.url = url;
    ep.target = *target;
    ep.channel = make_channel(ep.target, opts.etcd_tls);
    ep.kv = pb::KV::NewStub(ep.channel);
    ep.watch = pb::Watch::NewStub(ep.channel);
    eps.push_back(std::move(ep));
  }
  auto client = std::make_shared<Client>(std::move(eps), opts);

  // Fail now, with a clear message, if no endpoint answers.
  const auto req = probe_request("");
  pb::RangeResponse resp;
  auto status = client->call("open", "", false, Clock::now() + opts.dial_timeout,
                             [&](Endpoint& ep, grpc::ClientContext& ctx) {
                               return ep.kv->Range(&ctx, req, &resp);
                             });
  if (!status.ok()) {
    auto err = to_error(status, "open", "");
    if (is_endpoint_failure(status)) {
      err = Error{Errc::kUnavailable,
                  "etcd: no endpoint of " + client->endpoint_list() + " answered within " +
                      std::to_string(opts.dial_timeout.count()) +
                      " ms: " + status.error_message(),
                  {}};
    }
    return fail(std::move(err));
  }
  spdlog::info("etcd store opened endpoints={} revision={}", client->endpoint_list(),
               resp.header().revision());
  return std::unique_ptr<Store>(new EtcdStore(std::move(client)));
}

Result<KeyValue> EtcdStore::get(const std::string& key, Revision rev) {
  if (rev < 0) return fail(Errc::kBadRequest, "etcd get key=" + key + ": negative revision");
  pb::RangeRequest req;
  req.set_key(key);
  req.set_revision(rev);
  pb::RangeResponse resp;
  auto status = client_->call("get", key, false, client_->request_deadline(),
                              [&](Endpoint& ep, grpc::ClientContext& ctx) {
                                resp.Clear();
                                return ep.kv->Range(&ctx, req, &resp);
                              });
  if (!status.ok()) return fail(to_error(status, "get", key));
  if (resp.kvs_size() == 0) return fail(Errc::kNotFound, "etcd get: key not found key=" + key);
  return from_pb(resp.kvs(0));
}

Result<ListResult> EtcdStore::list(const std::string& prefix, const ListOptions& opts) {
  if (opts.revision < 0) {
    return fail(Errc::kBadRequest, "etcd list prefix=" + prefix + ": negative revision");
  }
  // etcd's conventions: range_end "\0" = no upper bound; key "\0" = from the first key.
  std::string start = std::max(prefix, opts.start_key);
  std::string end = prefix_end(prefix);
  const bool past_end = !end.empty() && start >= end;
  if (start.empty()) start.assign(1, '\0');
  if (end.empty()) end.assign(1, '\0');

  pb::RangeRequest req;
  if (past_end) {
    // Nothing left to list; still read the header (and honour a compacted revision).
    req = probe_request(prefix, opts.revision);
  } else {
    req.set_key(start);
    req.set_range_end(end);
    req.set_limit(std::max<int64_t>(opts.limit, 0));
    req.set_revision(opts.revision);
  }
  pb::RangeResponse resp;
  auto status = client_->call("list", prefix, false, client_->request_deadline(),
                              [&](Endpoint& ep, grpc::ClientContext& ctx) {
                                resp.Clear();
                                return ep.kv->Range(&ctx, req, &resp);
                              });
  if (!status.ok()) return fail(to_error(status, "list", prefix));

  ListResult out;
  out.revision = opts.revision != 0 ? opts.revision : resp.header().revision();
  if (past_end) return out;
  out.items.reserve(static_cast<size_t>(resp.kvs_size()));
  for (auto& kv : *resp.mutable_kvs()) {
    out.items.push_back(KeyValue{std::move(*kv.mutable_key()), std::move(*kv.mutable_value()),
                                 kv.create_revision(), kv.mod_revision(), kv.version()});
  }
  out.more = resp.more() && !out.items.empty();
  if (out.more) out.next_key = out.items.back().key + '\0';
  return out;
}

Result<KeyValue> EtcdStore::create(const std::string& key, const std::string& value) {
  pb::TxnRequest req;
  auto* cmp = req.add_compare();
  cmp->set_key(key);
  cmp->set_target(pb::Compare::MOD);
  cmp->set_result(pb::Compare::EQUAL);
  cmp->set_mod_revision(0);
  auto* put = req.add_success()->mutable_request_put();
  put->set_key(key);
  put->set_value(value);
  pb::TxnResponse resp;
  auto status = client_->call("create", key, true, client_->request_deadline(),
                              [&](Endpoint& ep, grpc::ClientContext& ctx) {
                                resp.Clear();
                                return ep.kv->Txn(&ctx, req, &resp);
                              });
  if (!status.ok()) return fail(to_error(status, "create", key));
  if (!resp.succeeded()) {
    return fail(Errc::kAlreadyExists, "etcd create: key already exists key=" + key);
  }
  const Revision rev = resp.header().revision();
  return KeyValue{key, value, rev, rev, 1};
}

Result<KeyValue> EtcdStore::update(const std::string& key, const std::string& value,
                                   Revision expected_mod_revision) {
  pb::TxnRequest req;
  add_guard(req, key, expected_mod_revision);
  auto* put = req.add_success()->mutable_request_put();
  put->set_key(key);
  put->set_value(value);
  put->set_prev_kv(true);
  req.add_failure()->mutable_request_range()->set_key(key);
  pb::TxnResponse resp;
  auto status = client_->call("update", key, true, client_->request_deadline(),
                              [&](Endpoint& ep, grpc::ClientContext& ctx) {
                                resp.Clear();
                                return ep.kv->Txn(&ctx, req, &resp);
                              });
  if (!status.ok()) return fail(to_error(status, "update", key));
  if (!resp.succeeded()) return fail(guard_error(resp, "update", key, expected_mod_revision));
  const Revision rev = resp.header().revision();
  const auto& prev = resp.responses(0).response_put().prev_kv();
  return KeyValue{key, value, prev.create_revision(), rev, prev.version() + 1};
}

Result<KeyValue> EtcdStore::remove(const std::string& key, Revision expected_mod_revision,
                                   Revision* deleted_at) {
  pb::TxnRequest req;
  add_guard(req, key, expected_mod_revision);
  auto* del = req.add_success()->mutable_request_delete_range();
  del->set_key(key);
  del->set_prev_kv(true);
  req.add_failure()->mutable_request_range()->set_key(key);
  pb::TxnResponse resp;
  auto status = client_->call("remove", key, true, client_->request_deadline(),
                              [&](Endpoint& ep, grpc::ClientContext& ctx) {
                                resp.Clear();
                                return ep.kv->Txn(&ctx, req, &resp);
                              });
  if (!status.ok()) return fail(to_error(status, "remove", key));
  if (!resp.succeeded()) return fail(guard_error(resp, "remove", key, expected_mod_revision));
  const auto& deleted = resp.responses(0).response_delete_range();
  if (deleted.prev_kvs_size() == 0) {
    return fail(Errc::kInternal, "etcd remove key=" + key + ": etcd returned no previous value");
  }
  if (deleted_at) *deleted_at = resp.header().revision();
  return from_pb(deleted.prev_kvs(0));
}

Result<std::unique_ptr<Watch>> EtcdStore::watch(const std::string& prefix, Revision after, const WatchOptions& opts) {
  if (after < 0) {
    return fail(Errc::kBadRequest, "etcd watch prefix=" + prefix + ": negative revision");
  }
  // after = 0: learn where "now" is, so that the watch delivers exactly what follows this
  // call. Otherwise check that history from after+1 still exists, so that a compacted
  // revision fails here and not on the first next(). (Range at R fails iff R is below the
  // compaction point, the same rule as a watch from R; a future R is fine for a watch.)
  const auto req = probe_request(prefix, after == 0 ? 0 : after + 1);
  pb::RangeResponse resp;
  auto status = client_->call("watch", prefix, false, client_->request_deadline(),
                              [&](Endpoint& ep, grpc::ClientContext& ctx) {
                                return ep.kv->Range(&ctx, req, &resp);
                              });
  if (!status.ok() && !is_future_revision(status)) {
    return fail(to_error(status, "watch", prefix));
  }
  auto state = std::make_shared<WatchState>();
  state->prefix = prefix;
  state->prev_kv = opts.prev;
  state->key = prefix.empty() ? std::string(1, '\0') : prefix;
  state->range_end = prefix_end(prefix);
  if (state->range_end.empty()) state->range_end.assign(1, '\0');
  state->next_revision = after == 0 ? resp.header().revision() + 1 : after + 1;
  client_->register_watch(state);
  return std::unique_ptr<Watch>(new EtcdWatch(client_, std::move(state)));
}

Result<void> EtcdStore::compact(Revision rev) {
  if (rev < 0) return fail(Errc::kInvalid, "etcd compact: negative revision");
  if (rev == 0) return {};
  pb::CompactionRequest req;
  req.set_revision(rev);
  req.set_physical(true);
  pb::CompactionResponse resp;
  // Idempotent: a retry of a compaction that did happen reports "already compacted".
  auto status = client_->call("compact", "", false, client_->request_deadline(),
                              [&](Endpoint& ep, grpc::ClientContext& ctx) {
                                return ep.kv->Compact(&ctx, req, &resp);
                              });
  if (status.ok() || is_compacted(status)) return {};
  if (is_future_revision(status)) {
    return fail(Errc::kInvalid,
                "etcd compact: revision " + std::to_string(rev) + " is beyond the current one");
  }
  return fail(to_error(status, "compact", ""));
}

Result<Revision> EtcdStore::current_revision() {
  const auto req = probe_request("");
  pb::RangeResponse resp;
  auto status = client_->call("current_revision", "", false, client_->request_deadline(),
                              [&](Endpoint& ep, grpc::ClientContext& ctx) {
                                return ep.kv->Range(&ctx, req, &resp);
                              });
  if (!status.ok()) return fail(to_error(status, "current_revision", ""));
  return resp.header().revision();
}

}  // namespace kos::store
