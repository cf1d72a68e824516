#include "controllers/ipam/check.h"

#include <algorithm>
#include <array>
#include <map>
#include <tuple>
#include <utility>

#include <boost/json/array.hpp>

#include "api/cidr.h"
#include "api/json.h"
#include "api/names.h"

namespace kos::controllers::ipam {
namespace json = boost::json;

namespace {

struct KindText {
  std::string_view name, singular, plural;
  int category;
};

constexpr std::array<KindText, kFindingKinds> kKindText{{
    {"duplicateAddress", "duplicate address", "duplicate addresses", 1},
    {"addressWithoutLock", "address without lock", "addresses without lock", 2},
    {"lockHeldByOther", "address locked by another owner", "addresses locked by another owner", 2},
    {"invalidAddress", "invalid address", "invalid addresses", 2},
    {"orphanLock", "orphan lock", "orphan locks", 3},
    {"unownedLock", "lock without controller", "locks without controller", 3},
    {"foreignOwner", "lock with a foreign controller", "locks with a foreign controller", 3},
    {"badLockName", "bad lock name", "bad lock names", 4},
    {"subnetMissing", "lock without subnet", "locks without subnet", 4},
    {"vniMismatch", "lock with the wrong VNI", "locks with the wrong VNI", 4},
    {"outsideSubnet", "lock outside its subnet", "locks outside their subnet", 4},
    {"outsideRange", "lock outside the usable range", "locks outside the usable range", 4},
}};

const KindText& text(FindingKind k) { return kKindText[static_cast<size_t>(k)]; }

using Key = std::pair<std::string, std::string>;  // namespace, name

Key key_of(const api::ObjectMeta& m) { return {m.namespace_, m.name}; }
std::string str(const api::ObjectMeta& m) { return m.namespace_ + "/" + m.name; }

ObjectRef ref_of(const api::ObjectMeta& m, std::string_view kind) {
  return {std::string(kind), m.namespace_, m.name, m.uid, m.resource_version};
}
ObjectRef ref_of(const api::NetworkAttachment& o) { return ref_of(o.metadata, "NetworkAttachment"); }
ObjectRef ref_of(const api::IPLock& o) { return ref_of(o.metadata, "IPLock"); }
ObjectRef ref_of(const api::Subnet& o) { return ref_of(o.metadata, "Subnet"); }

const api::OwnerReference* controller_of(const api::ObjectMeta& m) {
  for (const auto& r : m.owner_references)
    if (r.controller.value_or(false)) return &r;
  return nullptr;
}

bool is_attachment_ref(const api::OwnerReference& r) {
  return r.kind == api::kind_info(api::Kind::kNetworkAttachment).name &&
         r.api_version == api::kApiVersion;
}

std::string describe_owner(const api::OwnerReference& r, const std::string& ns) {
  return r.kind + " " + ns + "/" + r.name + " (uid " + r.uid + ")";
}

template <class T>
std::vector<const T*> sorted(const std::vector<T>& v) {
  std::vector<const T*> out;
  out.reserve(v.size());
  for (const auto& x : v) out.push_back(&x);
  std::ranges::sort(out, {}, [](const T* x) { return key_of(x->metadata); });
  return out;
}

std::string plural(size_t n, std::string_view one, std::string_view many) {
  return std::to_string(n) + " " + std::string(n == 1 ? one : many);
}

json::object ref_json(const ObjectRef& r) {
  json::object o;
  o["kind"] = r.kind;
  o["namespace"] = r.ns;
  o["name"] = r.name;
  o["uid"] = r.uid;
  o["resourceVersion"] = r.resource_version;
  return o;
}

Error with_context(const Error& e, const std::string& what) {
  Error out = e;
  out.message = what + ": " + e.message;
  return out;
}

// Every object of T's kind in `ns`, `limit` a page. `rv` empty: a consistent read, and
// `rv` receives its revision; else read at exactly `rv`.
template <class T>
Result<std::vector<T>> list_all(client::RestClient& c, const std::string& ns, int64_t limit,
                                std::string& rv) {
  const auto ref = client::ResourceRef::of(T::kKind);
  const std::string what = "listing " + std::string(api::kind_info(T::kKind).plural);
  client::ListOptions o;
  o.limit = limit;
  if (!rv.empty()) {
    o.resource_version = rv;
    o.resource_version_match = "Exact";
  }
  std::vector<T> out;
  bool first = true;
  while (true) {
    auto page = c.list(ref, ns, o);
    if (!page) return fail(with_context(page.error(), what));
    if (first && rv.empty()) rv = page->resource_version;
    first = false;
    for (const auto& v : page->items) {
      auto t = api::from_json<T>(v);
      if (!t) return fail(with_context(t.error(), what));
      out.push_back(std::move(*t));
    }
    if (page->continue_token.empty()) return out;
    // The continue token carries the revision; the server refuses both.
    o.continue_token = page->continue_token;
    o.resource_version.reset();
    o.resource_version_match.clear();
  }
}

}  // namespace

std::string_view finding_kind_name(FindingKind kind) { return text(kind).name; }
std::string_view finding_kind_label(FindingKind kind, size_t count) {
  return count == 1 ? text(kind).singular : text(kind).plural;
}
int finding_category(FindingKind kind) { return text(kind).category; }

size_t IpamReport::count(FindingKind kind) const {
  return static_cast<size_t>(std::ranges::count(findings, kind, &Finding::kind));
}

IpamReport analyze(const std::vector<api::NetworkAttachment>& attachments,
                   const std::vector<api::IPLock>& locks, const std::vector<api::Subnet>& subnets) {
  IpamReport rep;
  rep.attachments = attachments.size();
  rep.locks = locks.size();
  rep.subnets = subnets.size();
  const auto nas = sorted(attachments);
  const auto lks = sorted(locks);
  std::map<Key, const api::NetworkAttachment*> na_by_key;
  std::map<Key, const api::IPLock*> lock_by_key;
  std::map<Key, const api::Subnet*> subnet_by_key;
  for (const auto* x : nas) na_by_key.emplace(key_of(x->metadata), x);
  for (const auto* x : lks) lock_by_key.emplace(key_of(x->metadata), x);
  for (const auto& x : subnets) subnet_by_key.emplace(key_of(x.metadata), &x);

  auto add = [&](FindingKind k, std::vector<ObjectRef> objs, std::string msg) {
    rep.findings.push_back({k, std::move(objs), std::move(msg)});
  };

  // 1 and 2: the attachments' addresses.
  std::map<std::pair<uint32_t, uint32_t>, std::vector<const api::NetworkAttachment*>> by_address;
  for (const auto* na : nas) {
    const auto& st = na->status;
    if (st.ipv4.empty()) continue;
    ++rep.addressed;
    const std::string who = "attachment " + str(na->metadata);
    auto ip = api::parse_ipv4(st.ipv4);
    if (!ip) {
      add(FindingKind::kInvalidAddress, {ref_of(*na)},
          who + " has an invalid status.ipv4 \"" + st.ipv4 + "\": " + ip.error().message);
      continue;
    }
    if (st.address_vni < 1 || st.address_vni > api::kMaxVni) {
      add(FindingKind::kInvalidAddress, {ref_of(*na)},
          who + " has address " + st.ipv4 + " with an invalid status.addressVNI " +
              std::to_string(st.address_vni));
      continue;
    }
    by_address[{st.address_vni, *ip}].push_back(na);
    const std::string lock_name = api::format_iplock_name(st.address_vni, *ip);
    const std::string has = who + " has address " + api::format_ipv4(*ip) + " on VNI " +
                            std::to_string(st.address_vni) + " but ";
    auto it = lock_by_key.find({na->metadata.namespace_, lock_name});
    if (it == lock_by_key.end()) {
      add(FindingKind::kAddressWithoutLock, {ref_of(*na)},
          has + "no IPLock " + na->metadata.namespace_ + "/" + lock_name);
      continue;
    }
    const api::IPLock& lock = *it->second;
    const auto* ctrl = controller_of(lock.metadata);
    if (ctrl && ctrl->uid == na->metadata.uid) continue;
    add(FindingKind::kLockHeldByOther, {ref_of(*na), ref_of(lock)},
        has + "IPLock " + str(lock.metadata) + " is held by " +
            (ctrl ? describe_owner(*ctrl, lock.metadata.namespace_)
                  : std::string("no one (it has no controller owner reference)")));
  }
  for (const auto& [addr, holders] : by_address) {
    if (holders.size() < 2) continue;
    std::vector<ObjectRef> objs;
    std::string msg = "duplicate address " + api::format_ipv4(addr.second) + " on VNI " +
                      std::to_string(addr.first) + ":";
    for (size_t i = 0; i < holders.size(); ++i) {
      objs.push_back(ref_of(*holders[i]));
      msg += (i ? ", " : " ") + str(holders[i]->metadata);
    }
    add(FindingKind::kDuplicateAddress, std::move(objs), std::move(msg));
  }

  // 3 and 4: the locks.
  for (const auto* lock : lks) {
    const auto& m = lock->metadata;
    const std::string who = "IPLock " + str(m);
    if (const auto* ctrl = controller_of(m); !ctrl) {
      add(FindingKind::kUnownedLock, {ref_of(*lock)}, who + " has no controller owner reference");
    } else if (!is_attachment_ref(*ctrl)) {
      add(FindingKind::kForeignOwner, {ref_of(*lock)},
          who + " is controlled by " + describe_owner(*ctrl, m.namespace_) + " of apiVersion " +
              ctrl->api_version + ", not by a NetworkAttachment");
    } else {
      auto it = na_by_key.find({m.namespace_, ctrl->name});
      if (it == na_by_key.end() || it->second->metadata.uid != ctrl->uid) {
        std::string msg = "orphan " + who + ": its owner " + describe_owner(*ctrl, m.namespace_) +
                          " is gone";
        if (it != na_by_key.end())
          msg += " (" + str(it->second->metadata) + " is now uid " + it->second->metadata.uid + ")";
        add(FindingKind::kOrphanLock, {ref_of(*lock)}, std::move(msg));
      }
    }

    auto name = api::parse_iplock_name(m.name);
    if (!name)
      add(FindingKind::kBadLockName, {ref_of(*lock)},
          who + ": the name does not parse: " + name.error().message);
    const std::string subnet_key = m.namespace_ + "/" + lock->spec.subnet_name;
    auto sit = subnet_by_key.find({m.namespace_, lock->spec.subnet_name});
    if (sit == subnet_by_key.end()) {
      add(FindingKind::kSubnetMissing, {ref_of(*lock)},
          who + " names Subnet " + subnet_key + ", which does not exist");
      continue;
    }
    const api::Subnet& subnet = *sit->second;
    auto cidr = api::parse_cidr(subnet.spec.ipv4);
    if (!cidr) {
      add(FindingKind::kSubnetMissing, {ref_of(*lock), ref_of(subnet)},
          who + " names Subnet " + subnet_key + ", whose spec.ipv4 \"" + subnet.spec.ipv4 +
              "\" is not a CIDR");
      continue;
    }
    if (!name) continue;
    if (name->vni != subnet.spec.vni)
      add(FindingKind::kVniMismatch, {ref_of(*lock), ref_of(subnet)},
          who + ": VNI " + std::to_string(name->vni) + " is not the VNI " +
              std::to_string(subnet.spec.vni) + " of Subnet " + subnet_key);
    const std::string where = "Subnet " + subnet_key + " (" + cidr->to_string() + ")";
    if (!cidr->contains(name->ipv4)) {
      add(FindingKind::kOutsideSubnet, {ref_of(*lock), ref_of(subnet)},
          who + ": address " + api::format_ipv4(name->ipv4) + " is outside " + where);
    } else if (name->ipv4 < cidr->first_usable() || name->ipv4 > cidr->last_usable()) {
      add(FindingKind::kOutsideRange, {ref_of(*lock), ref_of(subnet)},
          who + ": address " + api::format_ipv4(name->ipv4) + " is outside the usable range " +
              api::format_ipv4(cidr->first_usable()) + "-" + api::format_ipv4(cidr->last_usable()) +
              " of " + where);
    }
  }

  std::ranges::stable_sort(rep.findings, {}, &Finding::kind);
  return rep;
}

Result<IpamReport> check_ipam(client::RestClient& client, const std::string& ns,
                              int64_t page_limit) {
  auto snapshot = [&]() -> Result<IpamReport> {
    std::string rv;  // set by the first list, then read at exactly that revision
    auto locks = list_all<api::IPLock>(client, ns, page_limit, rv);
    if (!locks) return fail(locks.error());
    auto nas = list_all<api::NetworkAttachment>(client, ns, page_limit, rv);
    if (!nas) return fail(nas.error());
    auto subnets = list_all<api::Subnet>(client, ns, page_limit, rv);
    if (!subnets) return fail(subnets.error());
    IpamReport rep = analyze(*nas, *locks, *subnets);
    rep.resource_version = rv;
    rep.ns = ns;
    return rep;
  };
  // The revision compacted away between the reads (410) only means: take a new snapshot.
  constexpr int kAttempts = 3;
  for (int attempt = 1;; ++attempt) {
    auto r = snapshot();
    if (r || r.error().code != Errc::kCompacted || attempt == kAttempts) return r;
  }
}

Result<int> repair_orphan_locks(client::RestClient& client, const IpamReport& report,
                                std::vector<RepairAction>* actions) {
  int deleted = 0;
  for (const auto& f : report.findings) {
    if (f.kind != FindingKind::kOrphanLock || f.objects.empty()) continue;
    const ObjectRef& lock = f.objects.front();
    client::DeleteOptions opts;
    opts.uid = lock.uid;
    if (!lock.resource_version.empty()) opts.resource_version = lock.resource_version;
    auto r = client.remove<api::IPLock>(lock.ns, lock.name, opts);
    RepairAction a{RepairAction::Outcome::kDeleted, lock, {}};
    if (r) {
      ++deleted;
      a.message = "deleted orphan IPLock " + lock.key() + " (uid " + lock.uid + ")";
    } else if (r.error().code == Errc::kNotFound) {
      a.outcome = RepairAction::Outcome::kAlreadyGone;
      a.message = "IPLock " + lock.key() + " (uid " + lock.uid + ") is already gone";
    } else if (r.error().code == Errc::kConflict) {
      a.outcome = RepairAction::Outcome::kChanged;
      a.message = "kept IPLock " + lock.key() + ": it changed or was re-created since the check (" +
                  r.error().message + ")";
    } else {
      return fail(with_context(r.error(), "deleting IPLock " + lock.key()));
    }
    if (actions) actions->push_back(std::move(a));
  }
  return deleted;
}

std::string format_summary(const IpamReport& r) {
  std::string s = plural(r.attachments, "attachment", "attachments") + " (" +
                  std::to_string(r.addressed) + " addressed), " + plural(r.locks, "lock", "locks") +
                  ", " + plural(r.subnets, "subnet", "subnets") + " checked";
  if (!r.resource_version.empty()) s += " at resourceVersion " + r.resource_version;
  s += r.ns.empty() ? " in all namespaces" : " in namespace " + r.ns;
  if (r.clean()) return s + ": no findings";
  s += ":";
  bool first = true;
  for (int k = 0; k < kFindingKinds; ++k) {
    auto kind = static_cast<FindingKind>(k);
    size_t n = r.count(kind);
    if (n == 0) continue;
    s += (first ? " " : ", ") + std::to_string(n) + " " + std::string(finding_kind_label(kind, n));
    first = false;
  }
  return s + " (" + plural(r.findings.size(), "finding", "findings") + ")";
}

json::object report_json(const IpamReport& r) {
  json::object o;
  o["resourceVersion"] = r.resource_version;
  o["namespace"] = r.ns;
  o["attachments"] = r.attachments;
  o["addressed"] = r.addressed;
  o["locks"] = r.locks;
  o["subnets"] = r.subnets;
  json::array findings;
  for (const auto& f : r.findings) {
    json::object fo;
    fo["kind"] = finding_kind_name(f.kind);
    fo["category"] = finding_category(f.kind);
    fo["message"] = f.message;
    json::array objs;
    for (const auto& x : f.objects) objs.push_back(ref_json(x));
    fo["objects"] = std::move(objs);
    findings.push_back(std::move(fo));
  }
  o["findings"] = std::move(findings);
  json::object counts;
  for (int k = 0; k < kFindingKinds; ++k) {
    auto kind = static_cast<FindingKind>(k);
    counts[finding_kind_name(kind)] = r.count(kind);
  }
  o["counts"] = std::move(counts);
  return o;
}

json::object repair_json(const RepairAction& a) {
  static constexpr std::string_view kOutcome[] = {"deleted", "alreadyGone", "changed"};
  json::object o;
  o["outcome"] = kOutcome[static_cast<size_t>(a.outcome)];
  o["lock"] = ref_json(a.lock);
  o["message"] = a.message;
  return o;
}

}  // namespace kos::controllers::ipam
