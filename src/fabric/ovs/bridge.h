// The OVS fabric's bridge, made through OVSDB as `ovs-vsctl add-br` / `add-port` would: bridge
// `name` (fail-mode secure: no flow, no traffic; OpenFlow 1.4 and 1.5 allowed; the
// datapath type given or detected) with its internal port, and the VXLAN port `vtep`
// (options key=flow, remote_ip=flow: the flows set the VNI and the remote VTEP per packet).
// Other bridges and ports are left alone (the original KOS broke when another bridge
// existed).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "common/error.h"
#include "fabric/ovs/ovsdb_client.h"

namespace kos::fabric::ovs {

struct BridgeOptions {
  std::string name = "kos";
  std::string datapath_type;  // "system" or "netdev"; empty: detect_datapath_type()
  std::string vtep = "vtep";
};

// "system" where the kernel has the openvswitch module, else "netdev" (userspace).
std::string detect_datapath_type();

struct BridgePorts {
  int64_t vtep_ofport = 0;  // the OpenFlow port of `vtep`, once ovs-vswitchd has assigned it
  bool created = false;     // the bridge did not exist before
};

// Makes the bridge and its vtep port exist as described (creating, or correcting a
// setting that differs), then waits until ovs-vswitchd has given vtep an OpenFlow port.
// Idempotent. kTimeout if ovs-vswitchd does not assign the port in time (is it running?).
Result<BridgePorts> ensure_bridge(OvsdbClient& db, const BridgeOptions& opts, std::chrono::milliseconds timeout);

}  // namespace kos::fabric::ovs
