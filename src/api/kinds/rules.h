// Field rules shared by the kind descriptions (see describe.h: FieldRule). Each adds
// causes for a non-empty value that breaks it.
#pragma once

#include <string>
#include <vector>

#include "api/causes.h"

namespace kos::api::rules {

// A reference to another object by name: a DNS-1123 subdomain.
void object_name(Causes& c, const FieldPath& path, const std::string& value);
// A CIDR (cidr.h) inside 10/8, 172.16/12 or 192.168/16.
void private_cidr(Causes& c, const FieldPath& path, const std::string& value);
// A dotted-quad IPv4 address.
void ipv4_address(Causes& c, const FieldPath& path, const std::string& value);
// A MAC address, aa:bb:cc:dd:ee:ff.
void mac_address(Causes& c, const FieldPath& path, const std::string& value);
// A command: the program first, so element 0 must not be empty.
void exec_command(Causes& c, const FieldPath& path, const std::vector<std::string>& command);

// "1..2097151 (21 bits)", for documentation.
std::string vni_range();

}  // namespace kos::api::rules
