// rtnetlink for the fabrics that make Linux devices (linux/, and ovs/ for its veths): requests
// built as values (byte vectors), the replies parsed, a socket that sends many requests in
// one sendmsg and matches their acknowledgements by sequence number, and the guest-end
// plugging that the CNI plugin asks of a fabric. libmnl underneath (see linux_fabric.cc for
// why not libnl).
//
// Threads: a NetlinkSocket is used by one thread at a time; it stays in the network
// namespace it was opened in. in_netns() runs a function on a fresh thread that entered
// another namespace, with a socket opened there.
#pragma once

#include <libmnl/libmnl.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "api/names.h"
#include "common/error.h"
#include "fabric/fabric.h"

namespace kos::fabric::nl {

// errno -> an Error whose code a caller can act on (EEXIST kAlreadyExists, ENOENT/ENODEV
// kNotFound, transient ones kUnavailable, the rest kInternal), with the kernel's text.
Error sys_error(const std::string& what, int err, const std::string& detail = {});

// ---------------------------------------------------------------------------------------
// Requests: each a complete netlink message as bytes; the socket fills in seq and NLM_F_ACK.

struct Request {
  std::vector<uint8_t> bytes;
  std::string what;        // for errors: "create veth kh0a..."
  bool absent_ok = false;  // a delete: ENOENT / ENODEV mean it is already done
};

class MsgBuilder {
 public:
  MsgBuilder(uint16_t type, uint16_t flags) : buf_(kSize) {
    nlh_ = mnl_nlmsg_put_header(buf_.data());
    nlh_->nlmsg_type = type;
    nlh_->nlmsg_flags = static_cast<uint16_t>(NLM_F_REQUEST | flags);
  }
  template <class T>
  T* header() {
    return static_cast<T*>(mnl_nlmsg_put_extra_header(nlh_, sizeof(T)));
  }
  nlmsghdr* nlh() { return nlh_; }
  void str(uint16_t type, const std::string& s) { mnl_attr_put_strz(nlh_, type, s.c_str()); }
  void u32(uint16_t type, uint32_t v) { mnl_attr_put_u32(nlh_, type, v); }
  void u16(uint16_t type, uint16_t v) { mnl_attr_put_u16(nlh_, type, v); }
  void u8(uint16_t type, uint8_t v) { mnl_attr_put_u8(nlh_, type, v); }
  void bytes(uint16_t type, const void* p, size_t n) { mnl_attr_put(nlh_, type, n, p); }
  nlattr* nest(uint16_t type) { return mnl_attr_nest_start(nlh_, type); }
  void end(nlattr* n) { mnl_attr_nest_end(nlh_, n); }
  Request done(std::string what, bool absent_ok = false) const {
    const auto* p = reinterpret_cast<const uint8_t*>(buf_.data());
    return Request{{p, p + nlh_->nlmsg_len}, std::move(what), absent_ok};
  }

 private:
  static constexpr size_t kSize = 4096;  // every message here is < 512 bytes
  std::vector<char> buf_;
  nlmsghdr* nlh_;
};

// The ifinfomsg of a link request; `up` sets IFF_UP.
ifinfomsg* link_header(MsgBuilder& m, bool up);

// A veth pair. The host end is the primary device (the kernel applies IFLA_MASTER only to
// it; master 0: none) and is up; the guest end is the peer, with the guest MAC, left down,
// made directly in the namespace `guest_netns_fd` if that is >= 0.
Request msg_new_veth(const std::string& host, const std::string& guest, const api::MacAddress& mac, uint32_t mtu,
                     int master, int guest_netns_fd = -1);
Request msg_del_link(const std::string& name);  // absent_ok
Request msg_get_link(const std::string& name);
Request msg_move_link(int index, int netns_fd, const std::string& new_name, const std::string& what);
Request msg_set_up(int index, const std::string& name);
Request msg_set_addr(int index, uint32_t ip, int prefix_len, const std::string& name);
Request msg_set_alias(const std::string& name, const std::string& alias);
// A route in the main table: dst/prefix_len through gateway `via` on interface `index`
// (replacing one of the same destination).
Request msg_set_route(int index, uint32_t dst, int prefix_len, uint32_t via, const std::string& name);
std::vector<uint8_t> msg_dump_links();

// ---------------------------------------------------------------------------------------
// Replies

using AttrTable = std::vector<const nlattr*>;
AttrTable attrs(const nlmsghdr* nlh, size_t offset, size_t max);
AttrTable nested(const nlattr* a, size_t max);
uint32_t get_u32(const nlattr* a);
uint16_t get_u16(const nlattr* a);
int get_u8(const nlattr* a);
std::string get_str(const nlattr* a);
std::optional<api::MacAddress> get_mac(const nlattr* a);
std::optional<uint32_t> get_ipv4(const nlattr* a);  // host byte order

struct Link {
  int index = 0;
  unsigned flags = 0;
  std::optional<api::MacAddress> mac;
  std::string name, kind, alias;
  int master = 0;
  uint32_t mtu = 0;
  // kind "vxlan"
  uint32_t vx_id = 0, vx_local = 0, vx_link = 0;
  uint16_t vx_port = 0;
  int vx_learning = -1, vx_proxy = -1;
};
std::optional<Link> parse_link(const nlmsghdr* nlh);

// ---------------------------------------------------------------------------------------
// The socket: batched requests with per-request acknowledgements, and dumps.

class NetlinkSocket {
 public:
  struct Reply {
    int error = 0;       // errno, 0 on success
    std::string extack;  // the kernel's extended-ACK message, if any
    std::vector<std::vector<uint8_t>> data;  // replies to GET requests
  };

  NetlinkSocket() = default;
  NetlinkSocket(const NetlinkSocket&) = delete;
  NetlinkSocket& operator=(const NetlinkSocket&) = delete;
  ~NetlinkSocket();

  Result<void> open();
  // Sends the requests in order, as few sendmsg calls as the limits allow, and returns one
  // reply per request. An error here (not in a reply) means the socket failed and the
  // outcome of the requests is unknown. `sends` (optional) counts the sendmsg calls.
  Result<std::vector<Reply>> transact(const std::vector<Request>& reqs, uint64_t* sends);
  // Runs a dump, calling fn for each message. kUnavailable if the dump was interrupted by a
  // concurrent change (NLM_F_DUMP_INTR): the caller should run it again.
  Result<void> dump(std::vector<uint8_t> req, const std::function<void(const nlmsghdr*)>& fn);

 private:
  static constexpr size_t kMaxBatchMessages = 256;
  static constexpr size_t kMaxBatchBytes = 64 * 1024;
  Result<void> send(const std::vector<char>& buf);
  Result<size_t> receive();
  static void parse_ack(const nlmsghdr* nlh, Reply& r);

  mnl_socket* nl_ = nullptr;
  uint32_t portid_ = 0;
  uint32_t seq_ = 0;
  std::vector<char> rbuf_ = std::vector<char>(1 << 17);
};

// A reply's refusal as an error naming the request and `where`, or nullopt: success, or a
// delete (absent_ok) of something already gone.
std::optional<Error> refusal(const Request& req, const NetlinkSocket::Reply& rep, const std::string& where);

// The requests that make local `l`'s veth pair (both fabrics' locals): the host end
// host_end_name(l.mac), up, under `master` unless 0, carrying host_end_alias(l) so that the
// kernel alone tells what it is; the guest end directly in l.guest_netns as l.guest_ifname
// where that namespace can be opened (its descriptor goes to `fds`, to close once sent),
// else in the fabric's namespace as l.name. `who` names the fabric in the log.
std::vector<Request> msgs_new_local(const LocalIfc& l, uint32_t mtu, int master, std::vector<int>& fds,
                                    const char* who);

// One request; its error (kNotFound for ENOENT/ENODEV) with `where`, or its data.
Result<std::vector<std::vector<uint8_t>>> one(NetlinkSocket& sock, Request req, const std::string& where);
// The link of that name, or nullopt.
Result<std::optional<Link>> find_link(NetlinkSocket& sock, const std::string& name, const std::string& where);

// ---------------------------------------------------------------------------------------
// Namespaces

// A network namespace by path, open (close-on-exec); kNotFound if there is none.
Result<int> open_netns(const std::string& path);
// A namespace as fabric options name it: empty, the caller's thread's own; a path; or a
// name under /var/run/netns. `who` prefixes errors ("linux fabric"). kNotFound if absent.
Result<int> open_fabric_netns(const std::string& netns, const std::string& who);

// setns for the calling thread.
Result<void> enter_netns(int netns_fd, const std::string& what);

// Runs fn on a new thread that has entered the namespace `netns_fd` (named `what` in
// errors), with a netlink socket opened there.
template <class T>
Result<T> in_netns(int netns_fd, const std::string& what, const std::function<Result<T>(NetlinkSocket&)>& fn) {
  std::optional<Result<T>> out;
  std::thread t([&] {
    if (auto r = enter_netns(netns_fd, what); !r) {
      out = fail(r.error());
      return;
    }
    NetlinkSocket sock;
    if (auto r = sock.open(); !r) {
      out = fail(r.error());
      return;
    }
    out = fn(sock);
  });
  t.join();
  return std::move(*out);
}

// ---------------------------------------------------------------------------------------
// Plugging (Fabric::plug and inspect, fabric.h) for a fabric whose local interfaces are
// veth pairs with the host end named host_end_name(mac) in the namespace `fabric_ns_fd`
// (described in errors by `where`, e.g. " in netns n0").

Result<Plugged> plug_guest_end(int fabric_ns_fd, const std::string& where, const LocalIfc& ifc, const Plug& plug);
Result<Plugged> inspect_netns(const std::string& netns, const std::string& ifname);

}  // namespace kos::fabric::nl
