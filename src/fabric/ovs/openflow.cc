#include "fabric/ovs/openflow.h"

#include <arpa/inet.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <spdlog/spdlog.h>

#include "common/unix_socket.h"

namespace kos::fabric::ovs::of {

namespace {

enum Type : uint8_t {
  kHello = 0, kError = 1, kEchoRequest = 2, kEchoReply = 3, kFlowMod = 14, kMultipartRequest = 18,
  kMultipartReply = 19, kBarrierRequest = 20, kBarrierReply = 21, kBundleControlMsg = 33, kBundleAdd = 34,
};
constexpr uint16_t kMultipartFlow = 1;
constexpr uint16_t kBundleFlags = 0x3;  // OFPBF_ATOMIC | OFPBF_ORDERED

// Big-endian writer.
struct W {
  std::vector<uint8_t> b;
  void u8(uint8_t v) { b.push_back(v); }
  void u16(uint16_t v) { u8(static_cast<uint8_t>(v >> 8)), u8(static_cast<uint8_t>(v)); }
  void u32(uint32_t v) { u16(static_cast<uint16_t>(v >> 16)), u16(static_cast<uint16_t>(v)); }
  void u64(uint64_t v) { u32(static_cast<uint32_t>(v >> 32)), u32(static_cast<uint32_t>(v)); }
  void raw(const uint8_t* p, size_t n) { b.insert(b.end(), p, p + n); }
  void zeros(size_t n) { b.insert(b.end(), n, 0); }
  void pad8(size_t from) {
    while ((b.size() - from) % 8) u8(0);
  }
  void set_u16(size_t at, uint16_t v) {
    b[at] = static_cast<uint8_t>(v >> 8);
    b[at + 1] = static_cast<uint8_t>(v);
  }
};

uint16_t get_u16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
uint32_t get_u32(const uint8_t* p) { return static_cast<uint32_t>(get_u16(p)) << 16 | get_u16(p + 2); }
uint64_t get_u64(const uint8_t* p) { return static_cast<uint64_t>(get_u32(p)) << 32 | get_u32(p + 4); }

// A message: header (length fixed by done()).
W header(uint8_t type, uint32_t xid) {
  W w;
  w.u8(kVersion);
  w.u8(type);
  w.u16(0);
  w.u32(xid);
  return w;
}
std::vector<uint8_t> done(W& w) {
  w.set_u16(2, static_cast<uint16_t>(w.b.size()));
  return std::move(w.b);
}

constexpr uint32_t oxm(uint16_t cls, uint8_t field, uint8_t len) {
  return static_cast<uint32_t>(cls) << 16 | static_cast<uint32_t>(field) << 9 | len;
}
constexpr uint16_t kBasic = 0x8000, kNxm1 = 0x0001;
constexpr uint32_t kOxmInPort = oxm(kBasic, 0, 4), kOxmEthDst = oxm(kBasic, 3, 6), kOxmEthType = oxm(kBasic, 5, 2),
                   kOxmArpTpa = oxm(kBasic, 23, 4), kOxmTunId = oxm(kBasic, 38, 8),
                   kNxmTunIpv4Dst = oxm(kNxm1, 32, 4);
// Security groups: OXM metadata, ip_proto, ipv4_src/dst, tcp_dst, udp_dst; NXM ct_state,
// conj_id, tun_id (the ct zone's source). A masked field's header has bit 8 set and twice
// the length (value, then mask).
constexpr uint32_t kOxmMetadata = oxm(kBasic, 2, 8), kOxmIpProto = oxm(kBasic, 10, 1),
                   kOxmIpv4Src = oxm(kBasic, 11, 4), kOxmIpv4Dst = oxm(kBasic, 12, 4),
                   kOxmTcpDst = oxm(kBasic, 14, 2), kOxmUdpDst = oxm(kBasic, 16, 2),
                   kNxmCtState = oxm(kNxm1, 105, 4), kNxmConjId = oxm(kNxm1, 37, 4), kNxmTunId = oxm(kNxm1, 16, 8);
constexpr uint32_t kHasMask = 0x100;
constexpr uint32_t masked(uint32_t h) { return (h & ~0xffu) | kHasMask | ((h & 0xff) * 2); }
// Nicira vendor actions (OFPAT_EXPERIMENTER, NX_VENDOR_ID).
constexpr uint16_t kExperimenter = 0xffff;
constexpr uint32_t kNxVendor = 0x00002320;
constexpr uint16_t kNxastResubmitTable = 14, kNxastConjunction = 34, kNxastCt = 35;
constexpr uint16_t kOfppInPort16 = 0xfff8;
constexpr uint16_t kZoneTunIdOfsNbits = 15;  // ofs 0 << 6 | (16 bits - 1)

void field32(W& w, uint32_t h, const std::pair<uint32_t, uint32_t>& vm) {
  if (vm.second == 0xffffffffu) {
    w.u32(h), w.u32(vm.first);
  } else {
    w.u32(masked(h)), w.u32(vm.first & vm.second), w.u32(vm.second);
  }
}
void field16(W& w, uint32_t h, const std::pair<uint16_t, uint16_t>& vm) {
  if (vm.second == 0xffff) {
    w.u32(h), w.u16(vm.first);
  } else {
    w.u32(masked(h)), w.u16(static_cast<uint16_t>(vm.first & vm.second)), w.u16(vm.second);
  }
}

void match(W& w, const Match& m) {
  const size_t start = w.b.size();
  w.u16(1);  // OFPMT_OXM
  w.u16(0);  // length, below
  if (m.in_port) w.u32(kOxmInPort), w.u32(*m.in_port);
  if (m.eth_dst) w.u32(kOxmEthDst), w.raw(m.eth_dst->data(), 6);
  if (m.eth_type || m.arp_tpa) w.u32(kOxmEthType), w.u16(m.eth_type.value_or(0x0806));
  if (m.arp_tpa) w.u32(kOxmArpTpa), w.u32(*m.arp_tpa);
  if (m.tun_id) w.u32(kOxmTunId), w.u64(*m.tun_id);
  if (m.metadata) w.u32(kOxmMetadata), w.u64(*m.metadata);
  if (m.ip_proto) w.u32(kOxmIpProto), w.u8(*m.ip_proto);
  if (m.ipv4_src) field32(w, kOxmIpv4Src, *m.ipv4_src);
  if (m.ipv4_dst) field32(w, kOxmIpv4Dst, *m.ipv4_dst);
  if (m.tp_dst) field16(w, m.ip_proto.value_or(6) == 17 ? kOxmUdpDst : kOxmTcpDst, *m.tp_dst);
  if (m.ct_state) field32(w, kNxmCtState, *m.ct_state);
  if (m.conj_id) w.u32(kNxmConjId), w.u32(*m.conj_id);
  w.set_u16(start + 2, static_cast<uint16_t>(w.b.size() - start));
  w.pad8(start);
}

void instructions(W& w, const Flow& f) {
  if (!f.actions.empty()) {
    const size_t start = w.b.size();
    w.u16(4);  // OFPIT_APPLY_ACTIONS
    w.u16(0);
    w.zeros(4);
    for (const auto& a : f.actions) {
      switch (a.kind) {
        case Action::Kind::kOutput:
          w.u16(0), w.u16(16), w.u32(static_cast<uint32_t>(a.value)), w.u16(0xffff), w.zeros(6);
          break;
        case Action::Kind::kSetTunId:
          w.u16(25), w.u16(16), w.u32(kOxmTunId), w.u64(a.value);
          break;
        case Action::Kind::kSetTunDst:
          w.u16(25), w.u16(16), w.u32(kNxmTunIpv4Dst), w.u32(static_cast<uint32_t>(a.value)), w.zeros(4);
          break;
        case Action::Kind::kCt:  // nx_action_conntrack, no nested actions
          w.u16(kExperimenter), w.u16(24), w.u32(kNxVendor), w.u16(kNxastCt);
          w.u16(static_cast<uint16_t>(a.arg & 1));  // NX_CT_F_COMMIT
          w.u32(kNxmTunId), w.u16(kZoneTunIdOfsNbits);
          w.u8(static_cast<uint8_t>(a.value)), w.zeros(3);
          w.u16(0);  // no ALG
          break;
        case Action::Kind::kConjunction:  // nx_action_conjunction: clause is 0-based
          w.u16(kExperimenter), w.u16(16), w.u32(kNxVendor), w.u16(kNxastConjunction);
          w.u8(static_cast<uint8_t>((a.arg >> 8) - 1)), w.u8(static_cast<uint8_t>(a.arg));
          w.u32(static_cast<uint32_t>(a.value));
          break;
        case Action::Kind::kResubmit:  // nx_action_resubmit, in_port OFPP_IN_PORT
          w.u16(kExperimenter), w.u16(16), w.u32(kNxVendor), w.u16(kNxastResubmitTable);
          w.u16(kOfppInPort16), w.u8(static_cast<uint8_t>(a.value)), w.zeros(3);
          break;
      }
    }
    w.set_u16(start + 2, static_cast<uint16_t>(w.b.size() - start));
  }
  if (f.goto_table) w.u16(1), w.u16(8), w.u8(*f.goto_table), w.zeros(3);
}

}  // namespace

std::vector<uint8_t> encode_hello(uint32_t xid) {
  W w = header(kHello, xid);
  w.u16(1);  // OFPHET_VERSIONBITMAP
  w.u16(8);
  w.u32(1u << kVersion);
  return done(w);
}

std::vector<uint8_t> encode_flow_mod(const FlowMod& mod, uint32_t xid) {
  W w = header(kFlowMod, xid);
  const bool add = mod.op == FlowMod::Op::kAdd, strict = mod.op == FlowMod::Op::kDeleteStrict;
  const bool has_flow = add || strict;
  w.u64(has_flow ? mod.flow.cookie : mod.cookie);
  // Cookie mask: a delete by cookie matches it exactly; a strict delete not at all (its
  // table, priority and match name one flow, and OVS looks a masked cookie up among every
  // flow of that cookie: a set's thousands).
  w.u64(add || strict ? 0 : ~uint64_t{0});
  w.u8(has_flow ? mod.flow.table : 0xff);        // OFPTT_ALL for the delete by cookie
  w.u8(add ? 0 : strict ? 4 : 3);                // OFPFC_ADD / OFPFC_DELETE_STRICT / OFPFC_DELETE
  w.u16(0), w.u16(0);                            // idle and hard timeouts
  w.u16(has_flow ? mod.flow.priority : 0);
  w.u32(0xffffffff);                             // OFP_NO_BUFFER
  w.u32(kPortAny), w.u32(0xffffffff);            // out_port, out_group: any
  w.u16(0), w.u16(0);                            // flags, importance
  match(w, has_flow ? mod.flow.match : Match{});
  if (add) instructions(w, mod.flow);
  return done(w);
}

std::vector<uint8_t> encode_barrier(uint32_t xid) {
  W w = header(kBarrierRequest, xid);
  return done(w);
}

std::vector<uint8_t> encode_bundle_control(uint32_t bundle, uint16_t type, uint32_t xid) {
  W w = header(kBundleControlMsg, xid);
  w.u32(bundle), w.u16(type), w.u16(kBundleFlags);
  return done(w);
}

std::vector<uint8_t> encode_bundle_add(uint32_t bundle, const std::vector<uint8_t>& msg, uint32_t xid) {
  W w = header(kBundleAdd, xid);
  w.u32(bundle), w.u16(0), w.u16(kBundleFlags);
  w.raw(msg.data(), msg.size());
  return done(w);
}

std::vector<uint8_t> encode_flow_stats_request(uint32_t xid) {
  W w = header(kMultipartRequest, xid);
  w.u16(kMultipartFlow), w.u16(0), w.zeros(4);
  w.u8(0xff), w.zeros(3);              // all tables
  w.u32(kPortAny), w.u32(0xffffffff);  // any out_port / out_group
  w.zeros(4);
  w.u64(0), w.u64(0);  // cookie, mask: all
  match(w, Match{});
  return done(w);
}

namespace {

// OXM fields into m; false if any is outside this encoder's vocabulary (or masked).
bool decode_match(const uint8_t* p, size_t len, Match& m) {
  bool ok = true;
  for (size_t off = 0; off + 4 <= len;) {
    const uint32_t h = get_u32(p + off);
    const size_t n = h & 0xff;
    if (off + 4 + n > len) return false;
    const uint8_t* v = p + off + 4;
    auto m32 = [&](uint32_t field) -> std::optional<std::pair<uint32_t, uint32_t>> {
      if (h == field) return std::pair{get_u32(v), 0xffffffffu};
      if (h == masked(field)) return std::pair{get_u32(v), get_u32(v + 4)};
      return std::nullopt;
    };
    auto m16 = [&](uint32_t field) -> std::optional<std::pair<uint16_t, uint16_t>> {
      if (h == field) return std::pair{get_u16(v), uint16_t{0xffff}};
      if (h == masked(field)) return std::pair{get_u16(v), get_u16(v + 2)};
      return std::nullopt;
    };
    if (h == kOxmInPort) m.in_port = get_u32(v);
    else if (h == kOxmEthDst) m.eth_dst.emplace(), std::memcpy(m.eth_dst->data(), v, 6);
    else if (h == kOxmEthType) m.eth_type = get_u16(v);
    else if (h == kOxmArpTpa) m.arp_tpa = get_u32(v);
    else if (h == kOxmTunId || h == kNxmTunId) m.tun_id = get_u64(v);
    else if (h == kOxmMetadata) m.metadata = get_u64(v);
    else if (h == kOxmIpProto) m.ip_proto = v[0];
    else if (auto s = m32(kOxmIpv4Src)) m.ipv4_src = s;
    else if (auto d = m32(kOxmIpv4Dst)) m.ipv4_dst = d;
    else if (auto t = m16(kOxmTcpDst)) m.tp_dst = t;
    else if (auto u = m16(kOxmUdpDst)) m.tp_dst = u;
    else if (auto c = m32(kNxmCtState)) m.ct_state = c;
    else if (h == kNxmConjId) m.conj_id = get_u32(v);
    else ok = false;
    off += 4 + n;
  }
  return ok;
}

bool decode_actions(const uint8_t* p, size_t len, std::vector<Action>& out) {
  bool ok = true;
  for (size_t off = 0; off + 4 <= len;) {
    const uint16_t type = get_u16(p + off), n = get_u16(p + off + 2);
    if (n < 8 || off + n > len) return false;
    const uint8_t* a = p + off + 4;
    if (type == 0 && n >= 16) {
      out.push_back(Action::output(get_u32(a)));
    } else if (type == 25 && n >= 8) {
      const uint32_t h = get_u32(a);
      if (h == kOxmTunId && n >= 16) out.push_back(Action::set_tun_id(get_u64(a + 4)));
      else if (h == kNxmTunIpv4Dst && n >= 12) out.push_back(Action::set_tun_dst(get_u32(a + 4)));
      else ok = false;
    } else if (type == kExperimenter && n >= 16 && get_u32(a) == kNxVendor) {
      const uint16_t sub = get_u16(a + 4);
      const uint8_t* b = a + 6;  // after the subtype
      if (sub == kNxastResubmitTable && get_u16(b) == kOfppInPort16) {
        out.push_back(Action::resubmit(b[2]));
      } else if (sub == kNxastConjunction) {
        out.push_back(Action::conjunction(get_u32(b + 2), static_cast<uint8_t>(b[0] + 1), b[1]));
      } else if (sub == kNxastCt && n == 24 && (get_u16(b) & ~1u) == 0 &&
                 (get_u32(b + 2) == kNxmTunId || get_u32(b + 2) == kOxmTunId) && get_u16(b + 6) == kZoneTunIdOfsNbits &&
                 get_u16(b + 12) == 0) {
        out.push_back(Action::ct(get_u16(b) & 1, b[8]));
      } else {
        ok = false;
      }
    } else {
      ok = false;
    }
    off += n;
  }
  return ok;
}

bool decode_instructions(const uint8_t* p, size_t len, Flow& f) {
  bool ok = true;
  for (size_t off = 0; off + 4 <= len;) {
    const uint16_t type = get_u16(p + off), n = get_u16(p + off + 2);
    if (n < 8 || off + n > len) return false;
    if (type == 4) ok = decode_actions(p + off + 8, n - 8u, f.actions) && ok;  // APPLY_ACTIONS
    else if (type == 1) f.goto_table = p[off + 4];                             // GOTO_TABLE
    else ok = false;
    off += n;
  }
  return ok;
}

}  // namespace

Result<std::vector<FlowEntry>> decode_flow_stats(const uint8_t* p, size_t len) {
  std::vector<FlowEntry> out;
  size_t off = 0;
  while (off < len) {
    if (len - off < 48) return fail(Errc::kInternal, "OpenFlow flow stats: truncated entry");
    const uint16_t n = get_u16(p + off);
    if (n < 48 || n > len - off) return fail(Errc::kInternal, "OpenFlow flow stats: bad entry length " + std::to_string(n));
    FlowEntry e;
    e.flow.table = p[off + 2];
    e.flow.priority = get_u16(p + off + 12);
    e.flow.cookie = get_u64(p + off + 24);
    // ofp_match at 48: type, length (without padding), OXM fields; then the instructions.
    const uint8_t* q = p + off + 48;
    const size_t rest = n - 48u;
    if (rest < 4 || get_u16(q) != 1) return fail(Errc::kInternal, "OpenFlow flow stats: not an OXM match");
    const size_t mlen = get_u16(q + 2);
    if (mlen < 4 || mlen > rest) return fail(Errc::kInternal, "OpenFlow flow stats: bad match length");
    e.understood = decode_match(q + 4, mlen - 4, e.flow.match);
    const size_t ioff = (mlen + 7) / 8 * 8;
    if (ioff > rest) return fail(Errc::kInternal, "OpenFlow flow stats: bad match padding");
    e.understood = decode_instructions(q + ioff, rest - ioff, e.flow) && e.understood;
    out.push_back(std::move(e));
    off += n;
  }
  return out;
}

std::string describe_error(uint16_t type, uint16_t code) {
  static const char* types[] = {"HELLO_FAILED", "BAD_REQUEST", "BAD_ACTION", "BAD_INSTRUCTION", "BAD_MATCH",
                                "FLOW_MOD_FAILED", "GROUP_MOD_FAILED", "PORT_MOD_FAILED", "TABLE_MOD_FAILED",
                                "QUEUE_OP_FAILED", "SWITCH_CONFIG_FAILED", "ROLE_REQUEST_FAILED", "METER_MOD_FAILED",
                                "TABLE_FEATURES_FAILED", "BAD_PROPERTY", "ASYNC_CONFIG_FAILED", "FLOW_MONITOR_FAILED",
                                "BUNDLE_FAILED"};
  std::string t = type < std::size(types) ? types[type] : "type " + std::to_string(type);
  return "OpenFlow error " + t + " code " + std::to_string(code);
}

// ---------------------------------------------------------------------------------------
// The connection

Result<std::unique_ptr<Connection>> Connection::connect(const std::string& path, std::chrono::milliseconds timeout) {
  auto conn = connect_unix(path, "the bridge's OpenFlow socket");
  if (!conn) return fail(conn.error());
  const int fd = *conn;
  // Hello both ways before the reader starts: the switch's hello says what it speaks.
  auto h = encode_hello(0);
  if (::send(fd, h.data(), h.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(h.size())) {
    ::close(fd);
    return fail(Errc::kUnavailable, "cannot write to " + path);
  }
  uint8_t hdr[8];
  size_t got = 0;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::vector<uint8_t> body;
  while (got < 8) {
    pollfd pf{fd, POLLIN, 0};
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0 || ::poll(&pf, 1, static_cast<int>(left)) <= 0) {
      ::close(fd);
      return fail(Errc::kTimeout, "the switch at " + path + " sent no OpenFlow hello");
    }
    ssize_t n = ::read(fd, hdr + got, 8 - got);
    if (n <= 0) {
      ::close(fd);
      return fail(Errc::kUnavailable, "the switch at " + path + " closed the connection during the hello");
    }
    got += static_cast<size_t>(n);
  }
  const uint16_t len = get_u16(hdr + 2);
  body.resize(len > 8 ? len - 8 : 0);
  for (size_t off = 0; off < body.size();) {
    ssize_t n = ::read(fd, body.data() + off, body.size() - off);
    if (n <= 0) {
      ::close(fd);
      return fail(Errc::kUnavailable, "the switch at " + path + " closed the connection during the hello");
    }
    off += static_cast<size_t>(n);
  }
  // Negotiation: with a version bitmap, 1.4 must be in it; without one, the lower of the two
  // hellos' versions is used, so the switch's must be 1.4 or later (OVS sends 1.5, bare).
  bool speaks = hdr[0] >= kVersion;
  if (body.size() >= 8 && get_u16(body.data()) == 1) speaks = (get_u32(body.data() + 4) & (1u << kVersion)) != 0;
  if (hdr[1] != kHello || !speaks) {
    ::close(fd);
    return fail(Errc::kUnsupported, "the switch at " + path + " does not speak OpenFlow 1.4 (its hello: version " +
                                        std::to_string(hdr[0]) + "); allow OpenFlow14 in the bridge's protocols");
  }
  return std::unique_ptr<Connection>(new Connection(fd));
}

Connection::Connection(int fd) : fd_(fd) { reader_ = std::thread([this] { read_loop(); }); }

Connection::~Connection() {
  {
    std::lock_guard lk(mu_);
    closing_ = true;
  }
  ::shutdown(fd_, SHUT_RDWR);
  if (reader_.joinable()) reader_.join();
  ::close(fd_);
}

bool Connection::connected() const {
  std::lock_guard lk(mu_);
  return connected_;
}

uint64_t Connection::bundles_committed() const {
  std::lock_guard lk(mu_);
  return committed_;
}

uint32_t Connection::next_xid() {
  std::lock_guard lk(mu_);
  if (xid_ == 0) xid_ = 1;  // 0 is the hello's
  return xid_++;
}

bool Connection::send(const std::vector<uint8_t>& bytes) {
  std::lock_guard lk(write_mu_);
  return write_all(fd_, std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

void Connection::expect(uint32_t xid) {
  std::lock_guard lk(mu_);
  replies_[xid];
}

void Connection::forget(uint32_t xid) {
  std::lock_guard lk(mu_);
  replies_.erase(xid);
}

void Connection::read_loop() {
  std::vector<uint8_t> buf;
  auto read_n = [&](size_t n) {
    buf.resize(n);
    for (size_t off = 0; off < n;) {
      ssize_t r = ::read(fd_, buf.data() + off, n - off);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return false;
      off += static_cast<size_t>(r);
    }
    return true;
  };
  for (;;) {
    if (!read_n(8)) break;
    const uint8_t type = buf[1];
    const uint16_t len = get_u16(buf.data() + 2);
    const uint32_t xid = get_u32(buf.data() + 4);
    std::vector<uint8_t> msg(buf.begin(), buf.end());
    if (len < 8) break;
    if (len > 8) {
      if (!read_n(len - 8u)) break;
      msg.insert(msg.end(), buf.begin(), buf.end());
    }
    if (type == kEchoRequest) {
      msg[1] = kEchoReply;
      (void)send(msg);
      continue;
    }
    std::lock_guard lk(mu_);
    if (auto it = replies_.find(xid); it != replies_.end()) {
      it->second.push_back(Reply{type, std::move(msg)});
      cv_.notify_all();
    }
  }
  std::function<void()> notify;
  {
    std::lock_guard lk(mu_);
    connected_ = false;
    why_closed_ = "the switch closed the OpenFlow connection";
    cv_.notify_all();
    if (!closing_) notify = std::move(on_disconnect_);
  }
  if (notify) notify();
}

void Connection::on_disconnect(std::function<void()> fn) {
  std::lock_guard lk(mu_);
  on_disconnect_ = std::move(fn);
}

Result<std::vector<Connection::Reply>> Connection::await(uint32_t xid, uint8_t until,
                                                         std::chrono::steady_clock::time_point deadline) {
  std::unique_lock lk(mu_);
  auto finished = [&] {
    auto& v = replies_[xid];
    for (const auto& r : v) {
      if (r.type == until || r.type == kError) {
        if (r.type != kMultipartReply) return true;
        if (r.msg.size() >= 12 && !(get_u16(r.msg.data() + 10) & 1)) return true;  // no REPLY_MORE
      }
    }
    return !connected_;
  };
  const bool ok = cv_.wait_until(lk, deadline, finished);
  std::vector<Reply> out = std::move(replies_[xid]);
  replies_.erase(xid);
  for (const auto& r : out)
    if (r.type == kError) {
      const uint16_t et = r.msg.size() >= 12 ? get_u16(r.msg.data() + 8) : 0, ec = r.msg.size() >= 12 ? get_u16(r.msg.data() + 10) : 0;
      return fail(Errc::kInvalid, describe_error(et, ec));
    }
  if (!ok) return fail(Errc::kTimeout, "the switch did not answer in time");
  bool complete = false;
  for (const auto& r : out) complete = complete || r.type == until;
  if (!complete) return fail(Errc::kUnavailable, why_closed_.empty() ? "the OpenFlow connection is closed" : why_closed_);
  return out;
}

Result<void> Connection::bundle(const std::vector<FlowMod>& mods, std::chrono::milliseconds timeout) {
  if (mods.empty()) return {};
  std::lock_guard serial(bundle_mu_);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  uint32_t bid;
  {
    std::lock_guard lk(mu_);
    bid = bundle_id_++;
  }
  // Open, every add and a barrier in one write: the barrier's reply comes after any
  // refusal of an add (the switch answers in order).
  const uint32_t x_open = next_xid();
  expect(x_open);
  std::vector<uint8_t> bytes = encode_bundle_control(bid, kOpenRequest, x_open);
  std::vector<uint32_t> adds;
  adds.reserve(mods.size());
  for (const auto& m : mods) {
    const uint32_t x = next_xid();
    expect(x);
    adds.push_back(x);
    auto add = encode_bundle_add(bid, encode_flow_mod(m, x), x);
    bytes.insert(bytes.end(), add.begin(), add.end());
  }
  const uint32_t x_bar = next_xid();
  expect(x_bar);
  auto bar = encode_barrier(x_bar);
  bytes.insert(bytes.end(), bar.begin(), bar.end());
  auto cleanup = [&] {
    for (uint32_t x : adds) forget(x);
    forget(x_open);
    forget(x_bar);
  };
  if (!send(bytes)) {
    cleanup();
    return fail(Errc::kUnavailable, "cannot write to the OpenFlow connection");
  }
  if (auto r = await(x_open, kBundleControlMsg, deadline); !r) {
    cleanup();
    return fail(r.error());
  }
  if (auto r = await(x_bar, kBarrierReply, deadline); !r) {
    cleanup();
    return fail(r.error());
  }
  std::optional<Error> refused;
  {
    std::lock_guard lk(mu_);
    for (size_t i = 0; i < adds.size() && !refused; ++i)
      for (const auto& r : replies_[adds[i]])
        if (r.type == kError && r.msg.size() >= 12)
          refused = Error{Errc::kInvalid,
                          describe_error(get_u16(r.msg.data() + 8), get_u16(r.msg.data() + 10)) + " for change " +
                              std::to_string(i) + " of the bundle",
                          {}};
  }
  for (uint32_t x : adds) forget(x);
  const uint32_t x_end = next_xid();
  expect(x_end);
  if (!send(encode_bundle_control(bid, refused ? kDiscardRequest : kCommitRequest, x_end))) {
    forget(x_end);
    return fail(Errc::kUnavailable, "cannot write to the OpenFlow connection");
  }
  auto end = await(x_end, kBundleControlMsg, deadline);
  if (refused) return fail(*refused);
  if (!end) return fail(end.error());
  std::lock_guard lk(mu_);
  ++committed_;
  return {};
}

Result<std::vector<FlowEntry>> Connection::dump_flows(std::chrono::milliseconds timeout) {
  const uint32_t x = next_xid();
  expect(x);
  if (!send(encode_flow_stats_request(x))) {
    forget(x);
    return fail(Errc::kUnavailable, "cannot write to the OpenFlow connection");
  }
  auto replies = await(x, kMultipartReply, std::chrono::steady_clock::now() + timeout);
  if (!replies) return fail(replies.error());
  std::vector<FlowEntry> out;
  for (const auto& r : *replies) {
    if (r.type != kMultipartReply || r.msg.size() < 16) continue;
    auto e = decode_flow_stats(r.msg.data() + 16, r.msg.size() - 16);
    if (!e) return fail(e.error());
    out.insert(out.end(), e->begin(), e->end());
  }
  return out;
}

}  // namespace kos::fabric::ovs::of
