// OpenFlow 1.4 for the OVS fabric: the messages it sends as values (encode_*), and one
// persistent connection to a bridge's management socket (ovs-vswitchd's <rundir>/<bridge>.mgmt)
// over which batches of flow changes go as atomic, ordered bundles.
//
// Only what KOS's flows need: matches on in_port, tun_id, eth_dst, eth_type and arp_tpa;
// for security groups (flows.h) also metadata, ip_proto, ipv4_src/ipv4_dst and tcp/udp
// tp_dst (maskable), and the Nicira fields ct_state (maskable) and conj_id; actions
// output, set_field tun_id / tun_ipv4_dst (the Nicira field OVS takes in OXM form), and
// the Nicira actions ct (NXAST_CT: commit flag, recirculation table, the zone taken from
// NXM_NX_TUN_ID[0..15]), conjunction (NXAST_CONJUNCTION) and resubmit(,table)
// (NXAST_RESUBMIT_TABLE: the only way back to an earlier table); the goto_table
// instruction; flow deletes by cookie and strict deletes of one flow; the flow-stats dump
// (cookies, tables, priorities: adoption compares cookies, which are derived from the
// flows' content).
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "api/names.h"
#include "common/error.h"

namespace kos::fabric::ovs::of {

inline constexpr uint8_t kVersion = 0x05;  // OpenFlow 1.4: the first with bundles
inline constexpr uint32_t kPortAny = 0xffffffff;

struct Match {
  std::optional<uint32_t> in_port;
  std::optional<uint64_t> tun_id;
  std::optional<api::MacAddress> eth_dst;
  std::optional<uint16_t> eth_type;  // 0x0806 with arp_tpa
  std::optional<uint32_t> arp_tpa;   // host byte order
  // Security groups. Masked fields are (value, mask); a full mask is sent unmasked and a
  // field decoded unmasked has the full mask, so a flow compares equal to its dump.
  // ipv4_* and ip_proto need eth_type 0x0800; tp_dst needs ip_proto 6 or 17 (it is sent as
  // tcp_dst or udp_dst by ip_proto).
  std::optional<uint64_t> metadata;
  std::optional<uint8_t> ip_proto;
  std::optional<std::pair<uint32_t, uint32_t>> ipv4_src, ipv4_dst;  // host byte order
  std::optional<std::pair<uint16_t, uint16_t>> tp_dst;
  std::optional<std::pair<uint32_t, uint32_t>> ct_state;  // the kCt* bits below
  std::optional<uint32_t> conj_id;
  bool operator==(const Match&) const = default;
};

// ct_state bits (NXM_NX_CT_STATE).
inline constexpr uint32_t kCtNew = 0x01, kCtEst = 0x02, kCtRel = 0x04, kCtRpl = 0x08, kCtInv = 0x10, kCtTrk = 0x20;
inline constexpr uint8_t kNoRecirc = 0xff;

struct Action {
  enum class Kind { kOutput, kSetTunId, kSetTunDst, kCt, kConjunction, kResubmit } kind = Kind::kOutput;
  // port, tun_id, tunnel destination IPv4 (host byte order), ct's recirculation table
  // (kNoRecirc: none), the conjunction id, or the resubmit table.
  uint64_t value = 0;
  // ct: 1 to commit; conjunction: clause k (1-based) << 8 | the number of clauses n.
  uint32_t arg = 0;
  static Action output(uint32_t port) { return {Kind::kOutput, port, 0}; }
  static Action set_tun_id(uint64_t id) { return {Kind::kSetTunId, id, 0}; }
  static Action set_tun_dst(uint32_t ip) { return {Kind::kSetTunDst, ip, 0}; }
  // ct(zone=NXM_NX_TUN_ID[0..15][,commit][,table=T]): the connection tracker, in the zone of
  // the packet's VNI (its low 16 bits).
  static Action ct(bool commit, uint8_t table = kNoRecirc) { return {Kind::kCt, table, commit ? 1u : 0u}; }
  static Action conjunction(uint32_t id, uint8_t k, uint8_t n) {
    return {Kind::kConjunction, id, static_cast<uint32_t>(k) << 8 | n};
  }
  static Action resubmit(uint8_t table) { return {Kind::kResubmit, table, 0}; }
  bool operator==(const Action&) const = default;
};

struct Flow {
  uint8_t table = 0;
  uint16_t priority = 0;
  uint64_t cookie = 0;
  Match match;
  std::vector<Action> actions;        // applied in order; none and no goto: drop
  std::optional<uint8_t> goto_table;  // after the actions
  bool operator==(const Flow&) const = default;
};

// A change of a bundle: add (or replace) a flow, delete every flow whose cookie is
// `cookie` (in any table), or delete the one flow of `flow`'s table, priority and match,
// whatever its cookie (OFPFC_DELETE_STRICT; absent: nothing).
struct FlowMod {
  enum class Op { kAdd, kDeleteCookie, kDeleteStrict } op = Op::kAdd;
  Flow flow;        // kAdd, kDeleteStrict
  uint64_t cookie;  // kDeleteCookie
  static FlowMod add(Flow f) { return {Op::kAdd, std::move(f), 0}; }
  static FlowMod remove(uint64_t cookie) { return {Op::kDeleteCookie, {}, cookie}; }
  static FlowMod remove_strict(Flow f) { return {Op::kDeleteStrict, std::move(f), 0}; }
};

// What a flow-stats dump says of each flow: the flow as far as this encoder's vocabulary
// goes (table, priority, cookie, match, actions, goto). `understood` is false when the
// switch reported a match field, action or instruction outside it: such a flow equals no
// flow that KOS makes.
struct FlowEntry {
  Flow flow;
  bool understood = true;
  bool operator==(const FlowEntry&) const = default;
};

// Messages, each complete with its header (xid given).
std::vector<uint8_t> encode_hello(uint32_t xid);
std::vector<uint8_t> encode_flow_mod(const FlowMod& mod, uint32_t xid);
std::vector<uint8_t> encode_barrier(uint32_t xid);
std::vector<uint8_t> encode_bundle_control(uint32_t bundle, uint16_t type, uint32_t xid);
std::vector<uint8_t> encode_bundle_add(uint32_t bundle, const std::vector<uint8_t>& msg, uint32_t xid);
std::vector<uint8_t> encode_flow_stats_request(uint32_t xid);
// The entries of one OFPMP_FLOW reply message (its body after the multipart header).
Result<std::vector<FlowEntry>> decode_flow_stats(const uint8_t* body, size_t len);

enum BundleControl : uint16_t {
  kOpenRequest = 0, kOpenReply = 1, kCommitRequest = 4, kCommitReply = 5, kDiscardRequest = 6, kDiscardReply = 7,
};

// One connection to a bridge. A reader thread answers echo requests and hands replies to
// the waiting call by xid. Calls may come from any thread; bundle() calls are serialised.
class Connection {
 public:
  // path: the bridge's management socket. kUnavailable when nobody listens there;
  // kUnsupported when the switch does not speak OpenFlow 1.4.
  static Result<std::unique_ptr<Connection>> connect(const std::string& path, std::chrono::milliseconds timeout);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // All of `mods` or none, in order: bundle open, one add per mod, a barrier to collect
  // any refusal, then commit (or discard, returning the first refusal: kInvalid with the
  // OpenFlow error type and code).
  Result<void> bundle(const std::vector<FlowMod>& mods, std::chrono::milliseconds timeout);
  Result<std::vector<FlowEntry>> dump_flows(std::chrono::milliseconds timeout);
  bool connected() const;
  uint64_t bundles_committed() const;
  // Runs once, on the reader thread, when the switch closes the connection (not on
  // destruction). Set it before the connection can drop; it must not call back in.
  void on_disconnect(std::function<void()> fn);

 private:
  explicit Connection(int fd);
  struct Reply {
    uint8_t type = 0;
    std::vector<uint8_t> msg;  // whole message
  };
  uint32_t next_xid();
  bool send(const std::vector<uint8_t>& bytes);
  // Waits for the replies to `xid` until one of type `until` (or an error, or the last
  // part of a multipart reply) arrives; all of them in order.
  Result<std::vector<Reply>> await(uint32_t xid, uint8_t until, std::chrono::steady_clock::time_point deadline);
  void expect(uint32_t xid);
  void forget(uint32_t xid);
  void read_loop();

  int fd_;
  std::thread reader_;
  std::mutex write_mu_, bundle_mu_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool connected_ = true;
  bool closing_ = false;  // the destructor shut the socket: no disconnect callback
  std::string why_closed_;
  uint32_t xid_ = 1;
  uint32_t bundle_id_ = 1;
  uint64_t committed_ = 0;
  std::map<uint32_t, std::vector<Reply>> replies_;  // xids being waited for
  std::function<void()> on_disconnect_;
};

// "OFPET 4 code 9" -> a readable name where known.
std::string describe_error(uint16_t type, uint16_t code);

}  // namespace kos::fabric::ovs::of
