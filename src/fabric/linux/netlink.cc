// rtnetlink requests, replies, the batching socket and guest-end plugging; see netlink.h.
#include "fabric/linux/netlink.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_link.h>
#include <linux/veth.h>
#include <net/if.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>

#include <spdlog/spdlog.h>

#include "api/cidr.h"
#include "fabric/linux/linux_fabric.h"

namespace kos::fabric::nl {

Error sys_error(const std::string& what, int err, const std::string& detail) {
  Errc code = Errc::kInternal;
  switch (err) {
    case EEXIST: code = Errc::kAlreadyExists; break;
    case ENOENT:
    case ENODEV: code = Errc::kNotFound; break;
    case EBUSY:
    case EAGAIN:
    case ENOBUFS:
    case ENOMEM:
    case EINTR: code = Errc::kUnavailable; break;
    default: break;
  }
  std::string msg = what + ": " + std::system_category().message(err);
  if (!detail.empty()) msg += " (" + detail + ")";
  return Error{code, std::move(msg), {}};
}

// ---------------------------------------------------------------------------------------
// Requests

ifinfomsg* link_header(MsgBuilder& m, bool up) {
  auto* ifi = m.header<ifinfomsg>();
  ifi->ifi_family = AF_UNSPEC;
  if (up) {
    ifi->ifi_flags = IFF_UP;
    ifi->ifi_change = IFF_UP;
  }
  return ifi;
}

Request msg_new_veth(const std::string& host, const std::string& guest, const api::MacAddress& mac, uint32_t mtu,
                     int master, int guest_netns_fd) {
  MsgBuilder m(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
  link_header(m, true);
  m.str(IFLA_IFNAME, host);
  m.u32(IFLA_MTU, mtu);
  if (master) m.u32(IFLA_MASTER, static_cast<uint32_t>(master));
  auto* li = m.nest(IFLA_LINKINFO);
  m.str(IFLA_INFO_KIND, "veth");
  auto* data = m.nest(IFLA_INFO_DATA);
  auto* peer = m.nest(VETH_INFO_PEER);
  link_header(m, false);  // the peer's own ifinfomsg: left down
  m.str(IFLA_IFNAME, guest);
  m.bytes(IFLA_ADDRESS, mac.data(), mac.size());
  m.u32(IFLA_MTU, mtu);
  if (guest_netns_fd >= 0) m.u32(IFLA_NET_NS_FD, static_cast<uint32_t>(guest_netns_fd));
  m.end(peer);
  m.end(data);
  m.end(li);
  return m.done("create veth " + host + " (guest end " + guest + ")");
}

Request msg_del_link(const std::string& name) {
  MsgBuilder m(RTM_DELLINK, 0);
  link_header(m, false);
  m.str(IFLA_IFNAME, name);
  return m.done("delete " + name, true);
}

Request msg_get_link(const std::string& name) {
  MsgBuilder m(RTM_GETLINK, 0);
  link_header(m, false);
  m.str(IFLA_IFNAME, name);
  m.u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
  return m.done("read " + name);
}

Request msg_move_link(int index, int netns_fd, const std::string& new_name, const std::string& what) {
  MsgBuilder m(RTM_SETLINK, 0);
  link_header(m, false)->ifi_index = index;
  m.u32(IFLA_NET_NS_FD, static_cast<uint32_t>(netns_fd));
  m.str(IFLA_IFNAME, new_name);
  return m.done(what);
}

Request msg_set_up(int index, const std::string& name) {
  MsgBuilder m(RTM_SETLINK, 0);
  link_header(m, true)->ifi_index = index;
  return m.done("set " + name + " up");
}

Request msg_set_addr(int index, uint32_t ip, int prefix_len, const std::string& name) {
  MsgBuilder m(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE);
  auto* ifa = m.header<ifaddrmsg>();
  ifa->ifa_family = AF_INET;
  ifa->ifa_prefixlen = static_cast<uint8_t>(prefix_len);
  ifa->ifa_index = static_cast<uint32_t>(index);
  const uint32_t be = htonl(ip);
  m.bytes(IFA_LOCAL, &be, 4);
  m.bytes(IFA_ADDRESS, &be, 4);
  return m.done("set address " + api::format_ipv4(ip) + "/" + std::to_string(prefix_len) + " on " + name);
}

Request msg_set_route(int index, uint32_t dst, int prefix_len, uint32_t via, const std::string& name) {
  MsgBuilder m(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE);
  auto* rt = m.header<rtmsg>();
  rt->rtm_family = AF_INET;
  rt->rtm_dst_len = static_cast<uint8_t>(prefix_len);
  rt->rtm_table = RT_TABLE_MAIN;
  rt->rtm_protocol = RTPROT_BOOT;
  rt->rtm_scope = RT_SCOPE_UNIVERSE;
  rt->rtm_type = RTN_UNICAST;
  const uint32_t be_dst = htonl(dst), be_via = htonl(via);
  if (prefix_len > 0) m.bytes(RTA_DST, &be_dst, 4);
  m.bytes(RTA_GATEWAY, &be_via, 4);
  m.u32(RTA_OIF, static_cast<uint32_t>(index));
  return m.done("set route " + api::format_ipv4(dst) + "/" + std::to_string(prefix_len) + " via " +
                api::format_ipv4(via) + " on " + name);
}

Request msg_set_alias(const std::string& name, const std::string& alias) {
  MsgBuilder m(RTM_SETLINK, 0);
  link_header(m, false);
  m.str(IFLA_IFNAME, name);
  m.bytes(IFLA_IFALIAS, alias.data(), alias.size());
  return m.done("set the alias of " + name);
}

std::vector<uint8_t> msg_dump_links() {
  MsgBuilder m(RTM_GETLINK, NLM_F_DUMP);
  link_header(m, false);
  m.u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
  return m.done("").bytes;
}

// ---------------------------------------------------------------------------------------
// Replies

namespace {

int table_cb(const nlattr* a, void* data) {
  auto* tb = static_cast<AttrTable*>(data);
  uint16_t t = mnl_attr_get_type(a);
  if (t < tb->size()) (*tb)[t] = a;
  return MNL_CB_OK;
}

}  // namespace

AttrTable attrs(const nlmsghdr* nlh, size_t offset, size_t max) {
  AttrTable tb(max + 1, nullptr);
  mnl_attr_parse(nlh, static_cast<unsigned>(offset), table_cb, &tb);
  return tb;
}

AttrTable nested(const nlattr* a, size_t max) {
  AttrTable tb(max + 1, nullptr);
  if (a) mnl_attr_parse_nested(a, table_cb, &tb);
  return tb;
}

uint32_t get_u32(const nlattr* a) { return a && mnl_attr_get_payload_len(a) >= 4 ? mnl_attr_get_u32(a) : 0; }
uint16_t get_u16(const nlattr* a) { return a && mnl_attr_get_payload_len(a) >= 2 ? mnl_attr_get_u16(a) : 0; }
int get_u8(const nlattr* a) { return a && mnl_attr_get_payload_len(a) >= 1 ? mnl_attr_get_u8(a) : -1; }
std::string get_str(const nlattr* a) {
  if (!a) return {};
  const auto* p = static_cast<const char*>(mnl_attr_get_payload(a));
  return std::string(p, strnlen(p, mnl_attr_get_payload_len(a)));
}
std::optional<api::MacAddress> get_mac(const nlattr* a) {
  if (!a || mnl_attr_get_payload_len(a) != 6) return std::nullopt;
  api::MacAddress mac;
  std::memcpy(mac.data(), mnl_attr_get_payload(a), 6);
  return mac;
}
std::optional<uint32_t> get_ipv4(const nlattr* a) {  // host byte order
  if (!a || mnl_attr_get_payload_len(a) != 4) return std::nullopt;
  return ntohl(mnl_attr_get_u32(a));
}

std::optional<Link> parse_link(const nlmsghdr* nlh) {
  if (nlh->nlmsg_type != RTM_NEWLINK || mnl_nlmsg_get_payload_len(nlh) < sizeof(ifinfomsg)) return std::nullopt;
  const auto* ifi = static_cast<const ifinfomsg*>(mnl_nlmsg_get_payload(nlh));
  AttrTable tb = attrs(nlh, sizeof(ifinfomsg), IFLA_MAX);
  Link l;
  l.index = ifi->ifi_index;
  l.flags = ifi->ifi_flags;
  l.mac = get_mac(tb[IFLA_ADDRESS]);
  l.name = get_str(tb[IFLA_IFNAME]);
  l.alias = get_str(tb[IFLA_IFALIAS]);
  l.master = static_cast<int>(get_u32(tb[IFLA_MASTER]));
  l.mtu = get_u32(tb[IFLA_MTU]);
  AttrTable li = nested(tb[IFLA_LINKINFO], IFLA_INFO_MAX);
  l.kind = get_str(li[IFLA_INFO_KIND]);
  if (l.kind == "vxlan" && li[IFLA_INFO_DATA]) {
    AttrTable vx = nested(li[IFLA_INFO_DATA], IFLA_VXLAN_MAX);
    l.vx_id = get_u32(vx[IFLA_VXLAN_ID]);
    l.vx_local = get_ipv4(vx[IFLA_VXLAN_LOCAL]).value_or(0);
    l.vx_link = get_u32(vx[IFLA_VXLAN_LINK]);
    l.vx_port = ntohs(get_u16(vx[IFLA_VXLAN_PORT]));
    l.vx_learning = get_u8(vx[IFLA_VXLAN_LEARNING]);
    l.vx_proxy = get_u8(vx[IFLA_VXLAN_PROXY]);
  }
  return l;
}

// ---------------------------------------------------------------------------------------
// The socket

NetlinkSocket::~NetlinkSocket() {
  if (nl_) mnl_socket_close(nl_);
}

Result<void> NetlinkSocket::open() {
  nl_ = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC);
  if (!nl_) return fail(sys_error("cannot open a netlink socket", errno));
  if (mnl_socket_bind(nl_, 0, MNL_SOCKET_AUTOPID) < 0) return fail(sys_error("cannot bind a netlink socket", errno));
  portid_ = mnl_socket_get_portid(nl_);
  int one = 1;
  // Acks without the request echoed back, plus the kernel's error strings. Both optional.
  (void)mnl_socket_setsockopt(nl_, NETLINK_CAP_ACK, &one, sizeof one);
  (void)mnl_socket_setsockopt(nl_, NETLINK_EXT_ACK, &one, sizeof one);
  // Room for the acks of a whole batch (the kernel drops what does not fit).
  int fd = mnl_socket_get_fd(nl_);
  int size = 8 << 20;
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) != 0)
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  return {};
}

Result<std::vector<NetlinkSocket::Reply>> NetlinkSocket::transact(const std::vector<Request>& reqs, uint64_t* sends) {
  std::vector<Reply> out(reqs.size());
  std::vector<char> sbuf;
  size_t i = 0;
  while (i < reqs.size()) {
    sbuf.clear();
    const size_t first = i;
    const uint32_t seq0 = seq_ + 1;
    while (i < reqs.size() && i - first < kMaxBatchMessages &&
           (sbuf.empty() || sbuf.size() + reqs[i].bytes.size() <= kMaxBatchBytes)) {
      const size_t off = sbuf.size();
      sbuf.insert(sbuf.end(), reqs[i].bytes.begin(), reqs[i].bytes.end());
      auto* nlh = reinterpret_cast<nlmsghdr*>(sbuf.data() + off);
      nlh->nlmsg_seq = ++seq_;
      nlh->nlmsg_pid = 0;
      nlh->nlmsg_flags |= NLM_F_ACK;
      ++i;
    }
    const uint32_t count = static_cast<uint32_t>(i - first);
    if (auto r = send(sbuf); !r) return fail(r.error());
    if (sends) ++*sends;
    uint32_t pending = count;
    while (pending > 0) {
      auto n = receive();
      if (!n) return fail(n.error());
      int len = static_cast<int>(*n);
      for (auto* nlh = reinterpret_cast<const nlmsghdr*>(rbuf_.data()); mnl_nlmsg_ok(nlh, len);
           nlh = mnl_nlmsg_next(nlh, &len)) {
        const uint32_t k = nlh->nlmsg_seq - seq0;  // unsigned: wraps are fine
        if (k >= count) continue;                  // a leftover of an earlier failure
        Reply& r = out[first + k];
        if (nlh->nlmsg_type == NLMSG_ERROR) {
          parse_ack(nlh, r);
          --pending;
        } else if (nlh->nlmsg_type != NLMSG_DONE) {
          const auto* p = reinterpret_cast<const uint8_t*>(nlh);
          r.data.emplace_back(p, p + nlh->nlmsg_len);
        }
      }
    }
  }
  return out;
}

Result<void> NetlinkSocket::dump(std::vector<uint8_t> req, const std::function<void(const nlmsghdr*)>& fn) {
  auto* h = reinterpret_cast<nlmsghdr*>(req.data());
  const uint32_t seq = ++seq_;
  h->nlmsg_seq = seq;
  std::vector<char> sbuf(req.begin(), req.end());
  if (auto r = send(sbuf); !r) return r;
  bool interrupted = false;
  for (;;) {
    auto n = receive();
    if (!n) return fail(n.error());
    int len = static_cast<int>(*n);
    for (auto* nlh = reinterpret_cast<const nlmsghdr*>(rbuf_.data()); mnl_nlmsg_ok(nlh, len);
         nlh = mnl_nlmsg_next(nlh, &len)) {
      if (nlh->nlmsg_seq != seq) continue;
      if (nlh->nlmsg_flags & NLM_F_DUMP_INTR) interrupted = true;
      if (nlh->nlmsg_type == NLMSG_DONE) {
        if (mnl_nlmsg_get_payload_len(nlh) >= sizeof(int)) {
          int err = *static_cast<const int*>(mnl_nlmsg_get_payload(nlh));
          if (err < 0) return fail(sys_error("netlink dump", -err));
        }
        if (interrupted) return fail(Errc::kUnavailable, "netlink dump interrupted by a concurrent change");
        return {};
      }
      if (nlh->nlmsg_type == NLMSG_ERROR) {
        Reply r;
        parse_ack(nlh, r);
        if (r.error) return fail(sys_error("netlink dump", r.error, r.extack));
        continue;
      }
      fn(nlh);
    }
  }
}


Result<void> NetlinkSocket::send(const std::vector<char>& buf) {
  for (;;) {
    ssize_t n = mnl_socket_sendto(nl_, buf.data(), buf.size());
    if (n == static_cast<ssize_t>(buf.size())) return {};
    if (n < 0 && errno == EINTR) continue;
    return fail(sys_error("netlink send", n < 0 ? errno : EMSGSIZE));
  }
}

Result<size_t> NetlinkSocket::receive() {
  for (;;) {
    ssize_t n = mnl_socket_recvfrom(nl_, rbuf_.data(), rbuf_.size());
    if (n >= 0) return static_cast<size_t>(n);
    if (errno == EINTR) continue;
    // ENOBUFS: acknowledgements were lost; the caller re-reads the kernel's state.
    return fail(sys_error("netlink receive", errno));
  }
}

void NetlinkSocket::parse_ack(const nlmsghdr* nlh, Reply& r) {
  if (mnl_nlmsg_get_payload_len(nlh) < sizeof(nlmsgerr)) {
    r.error = EPROTO;
    return;
  }
  const auto* e = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
  r.error = -e->error;
  if (!(nlh->nlmsg_flags & NLM_F_ACK_TLVS)) return;
  size_t off = sizeof(nlmsgerr);
  if (!(nlh->nlmsg_flags & NLM_F_CAPPED)) off += MNL_ALIGN(e->msg.nlmsg_len - sizeof(nlmsghdr));
  if (off >= mnl_nlmsg_get_payload_len(nlh)) return;
  AttrTable tb = attrs(nlh, off, NLMSGERR_ATTR_MAX);
  r.extack = get_str(tb[NLMSGERR_ATTR_MSG]);
}

std::optional<Error> refusal(const Request& req, const NetlinkSocket::Reply& rep, const std::string& where) {
  if (!rep.error || (req.absent_ok && (rep.error == ENOENT || rep.error == ENODEV))) return std::nullopt;
  return sys_error(req.what + where, rep.error, rep.extack);
}

std::vector<Request> msgs_new_local(const LocalIfc& l, uint32_t mtu, int master, std::vector<int>& fds,
                                    const char* who) {
  int ns_fd = -1;
  if (!l.guest_netns.empty()) {
    ns_fd = ::open(l.guest_netns.c_str(), O_RDONLY | O_CLOEXEC);
    if (ns_fd >= 0) fds.push_back(ns_fd);
    else spdlog::info("{}: {} cannot be opened ({}); guest end {} made here", who, l.guest_netns, std::strerror(errno), l.name);
  }
  const std::string host = host_end_name(l.mac);
  return {msg_new_veth(host, ns_fd >= 0 ? l.guest_ifname : l.name, l.mac, mtu, master, ns_fd),
          msg_set_alias(host, host_end_alias(l))};
}

// One request; its error (kNotFound for ENOENT/ENODEV) with `where`, or its data.
Result<std::vector<std::vector<uint8_t>>> one(NetlinkSocket& sock, Request req, const std::string& where) {
  auto r = sock.transact({req}, nullptr);
  if (!r) return fail(r.error());
  const auto& reply = (*r)[0];
  if (reply.error) return fail(sys_error(req.what + where, reply.error, reply.extack));
  return reply.data;
}

Result<std::optional<Link>> find_link(NetlinkSocket& sock, const std::string& name, const std::string& where) {
  auto r = one(sock, msg_get_link(name), where);
  if (!r) {
    if (r.error().code == Errc::kNotFound) return std::optional<Link>{};
    return fail(r.error());
  }
  for (const auto& d : *r)
    if (auto l = parse_link(reinterpret_cast<const nlmsghdr*>(d.data()))) return std::optional<Link>{*l};
  return std::optional<Link>{};
}

Result<Plugged> read_plugged(NetlinkSocket& sock, const std::string& ifname, const std::string& where) {
  auto l = find_link(sock, ifname, where);
  if (!l) return fail(l.error());
  if (!*l) return fail(Errc::kNotFound, "no interface " + ifname + where);
  Plugged p;
  p.ifname = ifname;
  p.ifindex = (*l)->index;
  p.mac = (*l)->mac.value_or(api::MacAddress{});
  p.up = ((*l)->flags & IFF_UP) != 0;
  MsgBuilder m(RTM_GETADDR, NLM_F_DUMP);
  m.header<ifaddrmsg>()->ifa_family = AF_INET;
  for (int attempt = 0;; ++attempt) {
    p.ipv4.clear();
    auto r = sock.dump(m.done("").bytes, [&](const nlmsghdr* nlh) {
      if (nlh->nlmsg_type != RTM_NEWADDR || mnl_nlmsg_get_payload_len(nlh) < sizeof(ifaddrmsg)) return;
      const auto* ifa = static_cast<const ifaddrmsg*>(mnl_nlmsg_get_payload(nlh));
      if (static_cast<int>(ifa->ifa_index) != p.ifindex) return;
      AttrTable tb = attrs(nlh, sizeof(ifaddrmsg), IFA_MAX);
      auto ip = get_ipv4(tb[IFA_LOCAL] ? tb[IFA_LOCAL] : tb[IFA_ADDRESS]);
      if (ip) p.ipv4.emplace_back(*ip, ifa->ifa_prefixlen);
    });
    if (r) break;
    if (r.error().code != Errc::kUnavailable || attempt >= 3) return fail(r.error());
  }
  return p;
}

// ---------------------------------------------------------------------------------------
// Namespaces

Result<int> open_netns(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) return fd;
  const int err = errno;
  if (err == ENOENT) return fail(Errc::kNotFound, "network namespace " + path + " does not exist");
  return fail(sys_error("cannot open network namespace " + path, err));
}

Result<int> open_fabric_netns(const std::string& netns, const std::string& who) {
  if (netns.empty()) {
    const int fd = ::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fail(sys_error(who + ": cannot open this thread's network namespace", errno));
    return fd;
  }
  std::string path = netns;
  if (path.front() != '/') {
    if (path == "." || path == ".." || path.find('/') != std::string::npos)
      return fail(Errc::kInvalid, who + ": bad network namespace name " + netns);
    path = "/var/run/netns/" + path;
  }
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) return fail(Errc::kNotFound, who + ": network namespace " + netns + " does not exist (" + path + ")");
    return fail(sys_error(who + ": cannot open network namespace " + path, err));
  }
  return fd;
}

Result<void> enter_netns(int netns_fd, const std::string& what) {
  if (setns(netns_fd, CLONE_NEWNET) != 0) return fail(sys_error("cannot enter network namespace " + what, errno));
  return {};
}

// ---------------------------------------------------------------------------------------
// Plugging. It runs on threads of its own that enter the fabric's namespace to move the
// guest end, then the workload's to configure it, with a netlink socket opened in each (a
// socket stays in the namespace it was opened in). The fabric's cache is not involved: it
// knows locals by their host end, which does not move.

Result<Plugged> plug_guest_end(int fabric_ns_fd, const std::string& where, const LocalIfc& ifc, const Plug& plug) {
  if (auto e = check(ifc)) return fail(*e);
  if (auto e = check(plug)) return fail(*e);
  const std::string there = " in network namespace " + plug.netns;
  auto target = open_netns(plug.netns);
  if (!target) return fail(target.error());
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{*target};
  auto taken = [&](const Link& l) {
    return Error{Errc::kConflict, "network namespace " + plug.netns + " already has an interface " + plug.ifname +
                                      " (MAC " + (l.mac ? api::format_mac(*l.mac) : std::string("none")) + ")", {}};
  };
  // 1. In the workload's namespace: the name must be free or ours already. (The kernel
  // moves a device before it renames it, so a taken name would strand the guest end there
  // under its fabric name.) A guest end stranded so by an earlier attempt is renamed.
  auto present = in_netns<bool>(*target, plug.netns, [&](NetlinkSocket& sock) -> Result<bool> {
    auto l = find_link(sock, plug.ifname, there);
    if (!l) return fail(l.error());
    if (*l) {
      if ((*l)->mac == ifc.mac) return true;
      return fail(taken(**l));
    }
    auto k = find_link(sock, ifc.name, there);
    if (!k) return fail(k.error());
    if (!*k || (*k)->mac != ifc.mac) return false;
    MsgBuilder m(RTM_SETLINK, 0);
    link_header(m, false)->ifi_index = (*k)->index;
    m.str(IFLA_IFNAME, plug.ifname);
    if (auto r = one(sock, m.done("rename " + ifc.name + " to " + plug.ifname), there); !r) return fail(r.error());
    return true;
  });
  if (!present) return fail(present.error());
  // 2. In the fabric's namespace: the guest end moves out, renamed on the way.
  if (!*present) {
    auto moved = in_netns<bool>(fabric_ns_fd, "of the fabric", [&](NetlinkSocket& sock) -> Result<bool> {
      const std::string& here = where;
      auto host = find_link(sock, host_end_name(ifc.mac), here);
      if (!host) return fail(host.error());
      if (!*host) return fail(Errc::kNotFound, "interface " + ifc.name + " is not in this fabric" + here);
      auto guest = find_link(sock, ifc.name, here);
      if (!guest) return fail(guest.error());
      if (!*guest)
        return fail(Errc::kNotFound, "the guest end " + ifc.name + " is neither in this fabric's namespace" + here +
                                         " nor" + there + " (moved elsewhere?)");
      if ((*guest)->mac != ifc.mac)
        return fail(Errc::kConflict, "interface " + ifc.name + here + " does not carry the guest MAC " + api::format_mac(ifc.mac));
      auto r = one(sock, msg_move_link((*guest)->index, *target, plug.ifname,
                                       "move " + ifc.name + " to" + there + " as " + plug.ifname), here);
      if (!r) return fail(r.error());
      return true;
    });
    if (!moved) return fail(moved.error());
  }
  // 3. In the workload's namespace: the interface must be ours (its MAC), then configured.
  return in_netns<Plugged>(*target, plug.netns, [&](NetlinkSocket& sock) -> Result<Plugged> {
    auto l = find_link(sock, plug.ifname, there);
    if (!l) return fail(l.error());
    if (!*l) return fail(Errc::kNotFound, "interface " + plug.ifname + " vanished from" + there);
    if ((*l)->mac != ifc.mac) return fail(taken(**l));
    const int index = (*l)->index;
    if (auto lo = find_link(sock, "lo", there); lo && *lo && !((*lo)->flags & IFF_UP))
      if (auto r = one(sock, msg_set_up((*lo)->index, "lo"), there); !r) return fail(r.error());
    if (auto r = one(sock, msg_set_addr(index, plug.ipv4, plug.prefix_len, plug.ifname), there); !r) return fail(r.error());
    if (!((*l)->flags & IFF_UP))
      if (auto r = one(sock, msg_set_up(index, plug.ifname), there); !r) return fail(r.error());
    for (auto [dst, len] : plug.via_gateway)
      if (auto r = one(sock, msg_set_route(index, dst, len, plug.gateway, plug.ifname), there); !r)
        return fail(r.error());
    return read_plugged(sock, plug.ifname, there);
  });
}

Result<Plugged> inspect_netns(const std::string& netns, const std::string& ifname) {
  if (netns.empty() || netns.front() != '/')
    return fail(Errc::kInvalid, "network namespace \"" + netns + "\" is not an absolute path");
  auto fd = open_netns(netns);
  if (!fd) return fail(fd.error());
  auto r = in_netns<Plugged>(*fd, netns, [&](NetlinkSocket& sock) {
    return read_plugged(sock, ifname, " in network namespace " + netns);
  });
  ::close(*fd);
  return r;
}

}  // namespace kos::fabric::nl
