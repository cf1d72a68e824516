#include "agent/local_api.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <set>

#include <spdlog/spdlog.h>

#include "api/cidr.h"
#include "api/names.h"
#include "common/unix_socket.h"

namespace kos::agent {

using cni::Request;
using cni::Response;
using Steady = std::chrono::steady_clock;

std::string cni_attachment_name(const std::string& node, const std::string& container_id, const std::string& ifname) {
  uint64_t h = 14695981039346656037ull;  // FNV-1a 64
  auto mix = [&](const std::string& s) {
    for (unsigned char c : s) {
      h ^= c;
      h *= 1099511628211ull;
    }
    h ^= 0xff;  // a separator no name contains
    h *= 1099511628211ull;
  };
  mix(node);
  mix(container_id);
  mix(ifname);
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return std::string("cni-") + buf;
}

namespace {

// CNI's rules for container ids (libcni ValidateContainerID) and Linux's for names.
std::optional<std::string> container_id_error(const std::string& id) {
  if (id.empty()) return "CNI_CONTAINERID is empty";
  if (id.size() > 1024) return "CNI_CONTAINERID is longer than 1024 characters";
  auto ok = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-'; };
  if (!std::isalnum(static_cast<unsigned char>(id[0])) || !std::all_of(id.begin(), id.end(), ok))
    return "CNI_CONTAINERID \"" + id + "\" must start with a letter or digit and hold only letters, digits, '_', '.' and '-'";
  return std::nullopt;
}

std::optional<std::string> ifname_error(const std::string& n) {
  if (auto e = api::linux_ifname_error(n)) return "CNI_IFNAME \"" + n + "\" " + *e;
  return std::nullopt;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& e : v) s += (s.empty() ? "" : "; ") + e;
  return s;
}

std::string key_of(const std::string& ns, const std::string& name) { return ns + "/" + name; }

int64_t ms_since(Steady::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Steady::now() - t).count();
}

}  // namespace

LocalApi::LocalApi(std::shared_ptr<client::RestClient> client, Agent& agent, fabric::Fabric& fabric,
                   LocalApiOptions opts)
    : client_(std::move(client)), agent_(agent), fabric_(fabric), opts_(std::move(opts)) {
  if (!opts_.prober) opts_.prober = std::make_shared<LinuxGuestProber>();
}

LocalApi::~LocalApi() { stop(); }

// ---------------------------------------------------------------------------------------
// The server

Result<void> LocalApi::start() {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::string& path = opts_.socket_path;
  if (path.empty() || path.size() >= sizeof addr.sun_path)
    return fail(Errc::kInvalid, "CNI socket path \"" + path + "\" is empty or longer than " +
                                    std::to_string(sizeof addr.sun_path - 1) + " characters");
  std::memcpy(addr.sun_path, path.data(), path.size());
  std::error_code ec;
  if (auto dir = std::filesystem::path(path).parent_path(); !dir.empty()) std::filesystem::create_directories(dir, ec);
  // A socket file left by an agent that died is replaced; one that answers is another agent's.
  if (std::filesystem::exists(path, ec)) {
    if (!std::filesystem::is_socket(path, ec)) return fail(Errc::kAlreadyExists, path + " exists and is not a socket");
    if (auto probe = connect_unix(path, "the CNI socket")) {
      ::close(*probe);
      return fail(Errc::kAlreadyExists, "another process serves the CNI socket " + path);
    }
    ::unlink(path.c_str());
  }
  listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (listen_fd_ < 0) return fail(Errc::kInternal, std::string("socket: ") + std::strerror(errno));
  if (::bind(listen_fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0 ||
      ::chmod(path.c_str(), 0600) != 0 || ::listen(listen_fd_, 128) != 0) {
    const int err = errno;
    ::close(listen_fd_);
    listen_fd_ = -1;
    return fail(Errc::kInternal, "cannot listen on " + path + ": " + std::strerror(err));
  }
  acceptor_ = std::thread([this] { accept_loop(); });
  spdlog::info("cni: serving the local API on {} for node {}", path, agent_.node());
  return {};
}

void LocalApi::stop() {
  if (stopping_.exchange(true)) return;
  if (acceptor_.joinable()) acceptor_.join();
  if (listen_fd_ >= 0) {
    ::close(listen_fd_);
    listen_fd_ = -1;
    ::unlink(opts_.socket_path.c_str());
  }
  std::unique_lock lk(conns_mu_);
  conns_cv_.wait(lk, [&] { return in_flight_ == 0; });
}

void LocalApi::accept_loop() {
  while (!stopping_) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    {
      std::lock_guard lk(conns_mu_);
      if (in_flight_ >= kMaxInFlight) {
        cni::write_response(fd, Response::error(cni::kTryAgainLater, "the KOS agent is busy (" +
                                                                         std::to_string(kMaxInFlight) + " requests in progress)"));
        ::close(fd);
        continue;
      }
      ++in_flight_;
    }
    std::thread([this, fd] {
      serve(fd);
      ::close(fd);
      std::lock_guard lk(conns_mu_);
      if (--in_flight_ == 0) conns_cv_.notify_all();
    }).detach();
  }
}

void LocalApi::serve(int fd) {
  // Only root may connect: the socket's mode is 0600.
  auto req = cni::read_request(fd, std::chrono::seconds(10));
  if (!req) {
    cni::write_response(fd, Response::error(cni::kDecodeFailure, "cannot read the request: " + req.error().message));
    return;
  }
  cni::write_response(fd, handle(*req));
}

std::chrono::milliseconds LocalApi::timeout_of(const Request& req) const {
  return std::clamp(req.timeout_ms > 0 ? std::chrono::milliseconds(req.timeout_ms) : opts_.default_timeout,
                    std::chrono::milliseconds(1), opts_.max_timeout);
}

std::shared_ptr<LocalApi::KeyState> LocalApi::key_state(const std::string& name) {
  std::lock_guard lk(keys_mu_);
  auto& ks = keys_[name];
  if (!ks) ks = std::make_shared<KeyState>();
  ++ks->users;
  return ks;
}

void LocalApi::release_key(const std::string& name) {
  std::lock_guard lk(keys_mu_);
  auto it = keys_.find(name);
  if (it != keys_.end() && --it->second->users == 0) keys_.erase(it);
}

// ---------------------------------------------------------------------------------------
// The operations

Response LocalApi::handle(const Request& req) {
  const auto t0 = Steady::now();
  Response r;
  if (req.op == "status") r = status();
  else if (req.op == "gc") r = gc(req);
  else if (req.op == "probe") r = probe(req);
  else if (req.op == "add" || req.op == "del" || req.op == "check") {
    // Arguments first: nothing is read or made for a request that cannot be served.
    if (auto e = container_id_error(req.container_id)) return Response::error(cni::kInvalidEnvironment, *e);
    if (auto e = ifname_error(req.ifname)) return Response::error(cni::kInvalidEnvironment, *e);
    if ((req.op != "del" || !req.netns.empty()) && (req.netns.empty() || req.netns.front() != '/'))
      return Response::error(cni::kInvalidEnvironment, "CNI_NETNS \"" + req.netns + "\" is not an absolute path");
    if (auto e = api::dns1123_label_error(req.ns)) return Response::error(cni::kInvalidConfig, "namespace \"" + req.ns + "\": " + *e);
    if (auto e = api::dns1123_subdomain_error(req.subnet))
      return Response::error(cni::kInvalidConfig, "subnet \"" + req.subnet + "\": " + *e);
    const std::string name = cni_attachment_name(agent_.node(), req.container_id, req.ifname);
    auto ks = key_state(name);
    if (req.op == "del") ++ks->dels;  // an ADD of this key in progress gives up
    {
      std::lock_guard serial(ks->mu);
      r = req.op == "add" ? add(req, *ks) : req.op == "del" ? del(req) : check(req);
    }
    release_key(name);
  } else {
    return Response::error(cni::kDecodeFailure, "unknown operation \"" + req.op + "\"");
  }
  std::string who = req.container_id.empty() ? "" : " container=" + req.container_id + " ifname=" + req.ifname;
  if (req.op == "probe") {
    who = " from=" + req.ns + "/" + req.attachment + " to=" + req.target + (req.port ? " port=" + std::to_string(req.port) : "") + " protocol=" + req.protocol;
    if (r.code == 0) who += " verdict=" + r.verdict + " (" + r.detail + ")";
  }
  if (r.code == 0)
    spdlog::info("cni: {}{} attachment={} address={} took_ms={}", req.op, who, r.attachment, r.address, ms_since(t0));
  else
    spdlog::warn("cni: {}{} failed code={} took_ms={}: {}", req.op, who, r.code, ms_since(t0), r.msg);
  return r;
}

namespace {

// What an attachment that is not ready waits for, in words a person can act on.
std::string waiting_for(const api::NetworkAttachment& na, const std::string& node) {
  if (!na.status.errors.ipam.empty()) return "the IPAM says: " + join(na.status.errors.ipam);
  if (na.status.ipv4.empty())
    return "it has no address yet (is `kos controller-manager` running with the ipam controller?)";
  if (!na.status.errors.host.empty()) return "node " + node + " says: " + join(na.status.errors.host);
  return "it has address " + na.status.ipv4 + " but is not implemented on node " + node + " yet";
}

}  // namespace

Response LocalApi::add(const Request& req, KeyState& ks) {
  const auto deadline = Steady::now() + timeout_of(req);
  const std::string name = cni_attachment_name(agent_.node(), req.container_id, req.ifname);
  const std::string key = key_of(req.ns, name);
  if (req.network.empty()) return Response::error(cni::kInvalidConfig, "the network config has no name");
  struct stat st{};
  if (::stat(req.netns.c_str(), &st) != 0)
    return Response::error(cni::kUnknownContainer, "CNI_NETNS " + req.netns + ": " + std::strerror(errno));
  const uint64_t dels = ks.dels.load();
  auto cancelled = [&] { return stopping_.load() || ks.dels.load() != dels; };

  // The subnet first: without it nothing can be addressed, so nothing is made.
  auto subnet = client_->get<api::Subnet>(req.ns, req.subnet);
  if (!subnet) {
    if (subnet.error().code == Errc::kNotFound)
      return Response::error(cni::kTryAgainLater, "Subnet " + req.ns + "/" + req.subnet + " does not exist");
    return Response::error(cni::kApiServer, "cannot read Subnet " + req.ns + "/" + req.subnet + ": " + subnet.error().message);
  }
  auto cidr = api::parse_cidr(subnet->spec.ipv4);
  if (!cidr) return Response::error(cni::kInvalidConfig, "Subnet " + req.ns + "/" + req.subnet + " has no valid CIDR");

  const auto t_start = Steady::now();
  // The agent makes the guest end right in the container (this request's CNI_NETNS: the
  // runtime's word, not the attachment's).
  agent_.place_guest(key, req.netns, req.ifname);
  struct Placement {  // forgotten unless the ADD succeeds
    Agent& agent;
    const std::string& key;
    bool keep = false;
    ~Placement() {
      if (!keep) agent.forget_placement(key);
    }
  } placement{agent_, key};
  // Get or create the attachment.
  bool created = false;
  api::NetworkAttachment na;
  for (int attempt = 0;; ++attempt) {
    auto got = client_->get<api::NetworkAttachment>(req.ns, name);
    if (got) {
      na = std::move(*got);
      break;
    }
    if (got.error().code != Errc::kNotFound || attempt >= 2)
      return Response::error(cni::kApiServer, "cannot read NetworkAttachment " + key + ": " + got.error().message);
    api::NetworkAttachment want;
    want.metadata.namespace_ = req.ns;
    want.metadata.name = name;
    want.metadata.labels[kCniPluginLabel] = "kos-cni";
    auto& an = want.metadata.annotations;
    an[kCniContainerAnnotation] = req.container_id;
    an[kCniIfnameAnnotation] = req.ifname;
    an[kCniNetworkAnnotation] = req.network;
    an[kCniNetnsAnnotation] = req.netns;
    if (auto p = req.args.find("K8S_POD_NAME"); p != req.args.end()) {
      auto pns = req.args.find("K8S_POD_NAMESPACE");
      an[kCniPodAnnotation] = (pns == req.args.end() ? std::string() : pns->second + "/") + p->second;
    }
    want.spec.node = agent_.node();
    want.spec.subnet = req.subnet;
    auto made = client_->create(want);
    if (made) {
      na = std::move(*made);
      created = true;
      break;
    }
    if (made.error().code == Errc::kAlreadyExists) continue;  // made meanwhile: read it
    if (made.error().code == Errc::kInvalid || made.error().code == Errc::kBadRequest)
      return Response::error(cni::kInvalidConfig, "the API refused NetworkAttachment " + key + ": " + made.error().to_string());
    return Response::error(cni::kApiServer, "cannot create NetworkAttachment " + key + ": " + made.error().message);
  }
  const auto& an = na.metadata.annotations;
  auto ann = [&](const char* k) {
    auto it = an.find(k);
    return it == an.end() ? std::string() : it->second;
  };
  if (ann(kCniContainerAnnotation) != req.container_id || ann(kCniIfnameAnnotation) != req.ifname ||
      na.spec.node != agent_.node())
    return Response::error(cni::kInvalidConfig, "NetworkAttachment " + key + " exists and was not made for container " +
                                                    req.container_id + " interface " + req.ifname + " on node " + agent_.node());
  if (na.spec.subnet != req.subnet)
    return Response::error(cni::kInvalidConfig, "container " + req.container_id + " interface " + req.ifname +
                                                    " is attached to subnet " + na.spec.subnet + " already (" + key +
                                                    "); DEL it before adding it to " + req.subnet);
  if (na.metadata.deletion_timestamp)
    return Response::error(cni::kTryAgainLater, "NetworkAttachment " + key + " is being deleted");

  // Undoes what this ADD made when it fails, so that nothing is left half-made.
  auto failed = [&](Response r) {
    if (!created) return r;
    client::DeleteOptions o;
    o.uid = na.metadata.uid;
    if (auto d = client_->remove<api::NetworkAttachment>(req.ns, name, o); !d && d.error().code != Errc::kNotFound)
      r.details += (r.details.empty() ? "" : "; ") + std::string("and deleting ") + key + " failed: " + d.error().message;
    else
      (void)agent_.wait_local(key, na.metadata.uid, true, Steady::now() + std::chrono::seconds(5));
    return r;
  };

  const auto t_made = Steady::now();
  for (int attempt = 0;; ++attempt) {
    auto ifc = agent_.wait_local(key, na.metadata.uid, false, deadline, cancelled);
    const auto t_ready = Steady::now();
    if (!ifc) {
      if (ifc.error().code == Errc::kCancelled)
        return failed(Response::error(cni::kTryAgainLater, stopping_ ? "the KOS agent is stopping"
                                                                     : "a DEL of this container's interface came first"));
      auto now = client_->get<api::NetworkAttachment>(req.ns, name);
      std::string why = now ? waiting_for(*now, agent_.node()) : "it cannot be read: " + now.error().message;
      return failed(Response::error(cni::kTryAgainLater,
                                    "NetworkAttachment " + key + " is not ready after " +
                                        std::to_string(timeout_of(req).count()) +
                                        " ms: " + why));
    }
    fabric::Plug plug{req.netns, req.ifname, (*ifc)->guest_ip, cidr->prefix, {}, {}};
    // A subnet of a VPC: the routes through its gateway (the routing the interface has).
    std::vector<std::string> gateway_routes;
    if ((*ifc)->routing.gateway) {
      plug.gateway = (*ifc)->routing.gateway;
      for (const auto& r : subnet->status.routes)
        if (auto c = api::parse_cidr(r)) {
          plug.via_gateway.emplace_back(c->addr, c->prefix);
          gateway_routes.push_back(c->to_string());
        }
    }
    if (!cidr->contains((*ifc)->guest_ip))
      return failed(Response::error(cni::kTryAgainLater, "the address " + api::format_ipv4((*ifc)->guest_ip) +
                                                             " is not in Subnet " + req.subnet + "'s " + cidr->to_string() +
                                                             " (it changed); try again"));
    auto plugged = fabric_.plug(**ifc, plug);
    if (!plugged) {
      const auto code = plugged.error().code;
      if (code == Errc::kNotFound && ::stat(req.netns.c_str(), &st) != 0)
        return failed(Response::error(cni::kUnknownContainer, "CNI_NETNS " + req.netns + " is gone"));
      if (code == Errc::kNotFound && attempt == 0) continue;  // the interface went meanwhile: wait again
      if (code == Errc::kConflict) return failed(Response::error(cni::kInvalidEnvironment, plugged.error().message));
      return failed(Response::error(cni::kIoFailure, "cannot move the interface into the container: " +
                                                         plugged.error().message));
    }
    spdlog::debug("cni: add {} subnet+attachment_ms={} implemented_ms={} plug_ms={}", key,
                  std::chrono::duration<double, std::milli>(t_made - t_start).count(),
                  std::chrono::duration<double, std::milli>(t_ready - t_made).count(),
                  std::chrono::duration<double, std::milli>(Steady::now() - t_ready).count());
    placement.keep = true;
    Response r;
    r.attachment = key;
    r.ifname = plugged->ifname;
    r.mac = api::format_mac(plugged->mac);
    r.sandbox = req.netns;
    r.address = api::format_ipv4((*ifc)->guest_ip) + "/" + std::to_string(cidr->prefix);
    if (cidr->size() >= 5) r.gateway = api::format_ipv4(cidr->addr + 1);
    r.routes = {cidr->to_string()};
    if (plug.gateway) {
      r.gateway = api::format_ipv4(plug.gateway);
      r.gateway_routes = std::move(gateway_routes);
    }
    return r;
  }
}

Response LocalApi::del(const Request& req) {
  const auto deadline = Steady::now() + timeout_of(req);
  const std::string name = cni_attachment_name(agent_.node(), req.container_id, req.ifname);
  const std::string key = key_of(req.ns, name);
  Response ok;
  ok.attachment = key;
  auto na = client_->get<api::NetworkAttachment>(req.ns, name);
  if (!na) {
    if (na.error().code == Errc::kNotFound) return ok;  // gone already
    return Response::error(cni::kApiServer, "cannot read NetworkAttachment " + key + ": " + na.error().message);
  }
  auto it = na->metadata.annotations.find(kCniContainerAnnotation);
  if (it == na->metadata.annotations.end() || it->second != req.container_id) return ok;  // not ours
  client::DeleteOptions o;
  o.uid = na->metadata.uid;
  if (auto d = client_->remove<api::NetworkAttachment>(req.ns, name, o);
      !d && d.error().code != Errc::kNotFound && d.error().code != Errc::kConflict)
    return Response::error(cni::kApiServer, "cannot delete NetworkAttachment " + key + ": " + d.error().message);
  auto gone = agent_.wait_local(key, na->metadata.uid, true, deadline, [&] { return stopping_.load(); });
  if (!gone)
    return Response::error(cni::kTryAgainLater, "NetworkAttachment " + key + " is deleted but node " + agent_.node() +
                                                    " still has its interface: " + gone.error().message);
  return ok;
}

Response LocalApi::check(const Request& req) {
  const std::string name = cni_attachment_name(agent_.node(), req.container_id, req.ifname);
  const std::string key = key_of(req.ns, name);
  auto na = client_->get<api::NetworkAttachment>(req.ns, name);
  if (!na) {
    if (na.error().code == Errc::kNotFound)
      return Response::error(cni::kUnknownContainer, "container " + req.container_id + " has no KOS attachment for " +
                                                         req.ifname + " (NetworkAttachment " + key + " does not exist)");
    return Response::error(cni::kApiServer, "cannot read NetworkAttachment " + key + ": " + na.error().message);
  }
  auto subnet = client_->get<api::Subnet>(req.ns, na->spec.subnet);
  if (!subnet) return Response::error(cni::kMismatch, "Subnet " + req.ns + "/" + na->spec.subnet + ": " + subnet.error().message);
  auto cidr = api::parse_cidr(subnet->spec.ipv4);
  if (!cidr) return Response::error(cni::kMismatch, "Subnet " + req.ns + "/" + na->spec.subnet + " has no valid CIDR");
  const std::string address = na->status.ipv4.empty() ? "" : na->status.ipv4 + "/" + std::to_string(cidr->prefix);
  if (address.empty()) return Response::error(cni::kMismatch, "NetworkAttachment " + key + " has no address");
  if (!req.prev_address.empty() && req.prev_address != address)
    return Response::error(cni::kMismatch, "NetworkAttachment " + key + " has address " + address +
                                               ", prevResult says " + req.prev_address);
  auto ifc = agent_.local(key, na->metadata.uid);
  if (!ifc) return Response::error(cni::kMismatch, "NetworkAttachment " + key + " is not implemented on node " + agent_.node());
  const std::string mac = api::format_mac(ifc->mac);
  if (!req.prev_mac.empty() && req.prev_mac != mac)
    return Response::error(cni::kMismatch, "the attachment's MAC is " + mac + ", prevResult says " + req.prev_mac);
  auto seen = fabric_.inspect(req.netns, req.ifname);
  if (!seen) return Response::error(cni::kMismatch, seen.error().message);
  if (seen->mac != ifc->mac)
    return Response::error(cni::kMismatch, "interface " + req.ifname + " in " + req.netns + " has MAC " +
                                               api::format_mac(seen->mac) + ", the attachment's is " + mac);
  if (!seen->up) return Response::error(cni::kMismatch, "interface " + req.ifname + " in " + req.netns + " is down");
  bool has = false;
  for (const auto& [ip, len] : seen->ipv4) has = has || (ip == ifc->guest_ip && len == cidr->prefix);
  if (!has) return Response::error(cni::kMismatch, "interface " + req.ifname + " in " + req.netns + " lacks address " + address);
  Response r;
  r.attachment = key;
  r.ifname = req.ifname;
  r.mac = mac;
  r.sandbox = req.netns;
  r.address = address;
  return r;
}

Response LocalApi::status() {
  client::ListOptions o;
  o.limit = 1;
  if (auto r = client_->list(client::ResourceRef::of(api::Kind::kSubnet), "", o); !r)
    return Response::error(cni::kNotAvailable, "the KOS agent of node " + agent_.node() +
                                                   " cannot reach the API server: " + r.error().message);
  return {};
}

Response LocalApi::gc(const Request& req) {
  if (req.network.empty()) return Response::error(cni::kInvalidConfig, "the network config has no name");
  std::set<std::pair<std::string, std::string>> valid(req.valid.begin(), req.valid.end());
  client::ListOptions o;
  o.label_selector = std::string(kCniPluginLabel) + "=kos-cni";
  o.field_selector = "spec.node=" + agent_.node();
  auto all = client_->list<api::NetworkAttachment>("", o);
  if (!all) return Response::error(cni::kApiServer, "cannot list this node's attachments: " + all.error().message);
  Response r;
  for (const auto& na : *all) {
    const auto& an = na.metadata.annotations;
    auto get = [&](const char* k) {
      auto it = an.find(k);
      return it == an.end() ? std::string() : it->second;
    };
    if (get(kCniNetworkAnnotation) != req.network) continue;
    if (valid.contains({get(kCniContainerAnnotation), get(kCniIfnameAnnotation)})) continue;
    client::DeleteOptions d;
    d.uid = na.metadata.uid;
    auto res = client_->remove<api::NetworkAttachment>(na.metadata.namespace_, na.metadata.name, d);
    if (!res && res.error().code != Errc::kNotFound && res.error().code != Errc::kConflict)
      return Response::error(cni::kApiServer, "cannot delete NetworkAttachment " + na.metadata.namespace_ + "/" +
                                                  na.metadata.name + ": " + res.error().message);
    r.deleted.push_back(na.metadata.namespace_ + "/" + na.metadata.name);
  }
  return r;
}

Response LocalApi::probe(const Request& req) {
  // Arguments first.
  if (auto e = api::dns1123_label_error(req.ns)) return Response::error(cni::kInvalidConfig, "namespace \"" + req.ns + "\": " + *e);
  if (auto e = api::dns1123_subdomain_error(req.attachment))
    return Response::error(cni::kInvalidConfig, "attachment \"" + req.attachment + "\": " + *e);
  auto target = api::parse_ipv4(req.target);
  if (!target) return Response::error(cni::kInvalidConfig, "target \"" + req.target + "\" is not an IPv4 address");
  auto proto = parse_probe_protocol(req.protocol);
  if (!proto) return Response::error(cni::kInvalidConfig, "protocol \"" + req.protocol + "\": tcp, udp or icmp");
  if (*proto == ProbeProtocol::kIcmp ? req.port != 0 : (req.port < 1 || req.port > 65535))
    return Response::error(cni::kInvalidConfig, *proto == ProbeProtocol::kIcmp
                                                    ? "an icmp probe takes no port"
                                                    : "port " + std::to_string(req.port) + ": 1..65535 for " + req.protocol);
  ProbeSpec spec;
  spec.protocol = *proto;
  spec.target = *target;
  spec.port = static_cast<uint16_t>(req.port);
  spec.timeout = std::clamp(req.timeout_ms > 0 ? std::chrono::milliseconds(req.timeout_ms) : kDefaultProbeTimeout,
                            kMinProbeTimeout, kMaxProbeTimeout);

  // The source: an attachment this agent has implemented (its incarnation read from the
  // API unless the caller knows it).
  const std::string key = key_of(req.ns, req.attachment);
  std::string uid = req.uid;
  if (uid.empty()) {
    auto na = client_->get<api::NetworkAttachment>(req.ns, req.attachment);
    if (!na) {
      if (na.error().code == Errc::kNotFound)
        return Response::error(cni::kNotLocal, "NetworkAttachment " + key + " does not exist");
      return Response::error(cni::kApiServer, "cannot read NetworkAttachment " + key + ": " + na.error().message);
    }
    if (na->spec.node != agent_.node())
      return Response::error(cni::kNotLocal, "NetworkAttachment " + key + " is on node " +
                                                 (na->spec.node.empty() ? "(none)" : na->spec.node) + ", not " +
                                                 agent_.node() + ": ask that node's agent");
    uid = na->metadata.uid;
  }
  auto ifc = agent_.local(key, uid);
  if (!ifc)
    return Response::error(cni::kNotLocal, "NetworkAttachment " + key + (req.uid.empty() ? "" : " (uid " + req.uid + ")") +
                                               " is not implemented on node " + agent_.node());
  auto answer = opts_.prober->probe(Guest{key, uid, ifc->mac, ifc->guest_ip}, spec);
  if (!answer) {
    if (answer.error().code == Errc::kNotFound)
      return Response::error(cni::kNoGuest, "the guest of NetworkAttachment " + key + " was not found on node " +
                                                agent_.node() + ": " + answer.error().message);
    return Response::error(cni::kProbeFailed, "cannot probe from NetworkAttachment " + key + ": " + answer.error().message);
  }
  Response r;
  r.attachment = key;
  r.ifname = answer->where.ifname;
  r.sandbox = answer->where.path;
  r.verdict = answer->outcome.allowed ? "allow" : "deny";
  r.detail = answer->outcome.detail;
  r.elapsed_us = std::max<int64_t>(1, answer->outcome.elapsed.count());
  return r;
}

}  // namespace kos::agent
