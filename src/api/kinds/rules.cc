#include "api/kinds/rules.h"

#include "api/cidr.h"
#include "api/names.h"

namespace kos::api::rules {

void object_name(Causes& c, const FieldPath& path, const std::string& value) {
  if (auto e = dns1123_subdomain_error(value)) c.invalid(path, show(value), *e);
}

void private_cidr(Causes& c, const FieldPath& path, const std::string& value) {
  if (auto cidr = parse_cidr(value); !cidr) {
    c.invalid(path, show(value), detail_of(cidr.error()));
  } else if (!in_private_ranges(*cidr)) {
    c.invalid(path, show(value), "must be inside 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16");
  }
}

void ipv4_address(Causes& c, const FieldPath& path, const std::string& value) {
  if (auto ip = parse_ipv4(value); !ip) c.invalid(path, show(value), detail_of(ip.error()));
}

void mac_address(Causes& c, const FieldPath& path, const std::string& value) {
  if (auto mac = parse_mac(value); !mac) c.invalid(path, show(value), detail_of(mac.error()));
}

void exec_command(Causes& c, const FieldPath& path, const std::vector<std::string>& command) {
  if (!command.empty() && command.front().empty()) c.required(path.str() + "[0]", "the program to run");
}

std::string vni_range() { return "1.." + std::to_string(kMaxVni) + " (21 bits)"; }

}  // namespace kos::api::rules
