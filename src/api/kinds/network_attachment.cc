// NetworkAttachment: a guest's interface on one node, on one Subnet.
#include "api/describe.h"
#include "api/kinds/rules.h"
#include "api/names.h"
#include "api/security_groups.h"

namespace kos::api {
namespace {

using NA = NetworkAttachment;

const StructDesc<NetworkAttachmentSpec>& spec() {
  using S = NetworkAttachmentSpec;
  static const StructDesc<S> d{
      "NetworkAttachmentSpec",
      "The desired state of a NetworkAttachment.",
      {
          field("node", &S::node,
                {.description = "Name of the node that implements the attachment: its "
                                "connection agent creates the network interface there. "
                                "Required. Immutable.",
                 .required = true,
                 .immutable = true,
                 .selectable = true,
                 .always = true},
                FieldRule<std::string>(rules::object_name)),
          field("subnet", &S::subnet,
                {.description = "Name of the Subnet, in the same namespace, that the "
                                "attachment's address is taken from. Required. Immutable.",
                 .required = true,
                 .immutable = true,
                 .selectable = true,
                 .always = true},
                FieldRule<std::string>(rules::object_name)),
          field("postCreateExec", &S::post_create_exec,
                {.description =
                     "A command the connection agent runs on the node after it has created "
                     "the interface: the program, then its arguments. In each element "
                     "${ifname}, ${ipv4} and ${mac} are replaced by the interface name, IPv4 "
                     "address and MAC address. Only programs on the agent's allow-list are "
                     "run; the outcome is reported in status.postCreateExecReport. Optional. "
                     "Immutable.",
                 .immutable = true},
                FieldRule<std::vector<std::string>>(rules::exec_command)),
          field("postDeleteExec", &S::post_delete_exec,
                {.description = "A command the connection agent runs on the node after it "
                                "has deleted the interface, in the same form and with the "
                                "same substitutions as postCreateExec. Optional. Mutable."},
                FieldRule<std::vector<std::string>>(rules::exec_command)),
          field("securityGroups", &S::security_groups,
                {.description = "Names of the SecurityGroups, in the same namespace, the "
                                "attachment is in: it accepts only what their ingress rules "
                                "allow and sends only what their egress rules allow (replies "
                                "to allowed traffic pass). Empty: it accepts and sends "
                                "everything. At most " +
                                std::to_string(kMaxAttachmentGroups) +
                                ", without repeats. Mutable: a change takes effect on the live "
                                "interface (see status.securityGroupsInForce). Selectable: "
                                "spec.securityGroups=G selects the members of G.",
                 .selectable = true},
                FieldRule<std::vector<std::string>>(
                    [](Causes& c, const FieldPath& path, const std::vector<std::string>& v) {
                      if (v.size() > kMaxAttachmentGroups) {
                        c.invalid(path, std::to_string(v.size()) + " groups",
                                  "at most " + std::to_string(kMaxAttachmentGroups));
                        return;
                      }
                      for (std::size_t i = 0; i < v.size(); ++i) {
                        const std::string p = path.str() + "[" + std::to_string(i) + "]";
                        if (v[i].empty()) c.required(p);
                        else rules::object_name(c, FieldPath{{}, p}, v[i]);
                        for (std::size_t j = 0; j < i; ++j) {
                          if (v[j] == v[i]) c.duplicate(p, show(v[i]));
                        }
                      }
                    })),
      }};
  return d;
}

const StructDesc<SecurityGroupRevision>& group_revision() {
  using S = SecurityGroupRevision;
  static const StructDesc<S> d{
      "SecurityGroupRevision",
      "A SecurityGroup at one resourceVersion.",
      {
          field("name", &S::name, {.description = "The group's name.", .always = true}),
          field("resourceVersion", &S::resource_version,
                {.description = "The group's metadata.resourceVersion whose rules are in "
                                "force.",
                 .always = true}),
      }};
  return d;
}

const StructDesc<NetworkAttachmentErrors>& errors() {
  using S = NetworkAttachmentErrors;
  static const StructDesc<S> d{
      "NetworkAttachmentErrors",
      "Problems that keep a NetworkAttachment from being implemented, by the component that "
      "found them.",
      {
          field("ipam", &S::ipam,
                {.description = "Errors from IPAM, e.g. \"Subnet X does not exist\", \"Subnet "
                                "X has not passed validation\" or \"Referenced subnet has run "
                                "out of IPs\".",
                 .section = section::kAddress}),
          field("host", &S::host,
                {.description = "Errors from the connection agent of spec.node, e.g. a "
                                "failure to create the network interface.",
                 .section = section::kImpl}),
      }};
  return d;
}

const StructDesc<ExecReport>& exec_report() {
  using S = ExecReport;
  static const StructDesc<S> d{
      "ExecReport",
      "The outcome of running a command on the node of a NetworkAttachment.",
      {
          field("command", &S::command,
                {.description = "The command that was run (program and arguments), after "
                                "substitution of ${ifname}, ${ipv4} and ${mac}.",
                 .always = true}),
          field("exitStatus", &S::exit_status,
                {.description = "Exit status of the command: 0 for success; negative when "
                                "the command could not be run at all (see stdErr).",
                 .format = "int32",
                 .always = true}),
          field("startTime", &S::start_time, {.description = "When the command was started."}),
          field("stopTime", &S::stop_time, {.description = "When the command finished."}),
          field("stdOut", &S::std_out,
                {.description = "What the command wrote to its standard output.",
                 .always = true}),
          field("stdErr", &S::std_err,
                {.description = "What the command wrote to its standard error, or why it "
                                "could not be run.",
                 .always = true}),
      }};
  return d;
}

const StructDesc<NetworkAttachmentStatus>& status() {
  using S = NetworkAttachmentStatus;
  static const StructDesc<S> d{
      "NetworkAttachmentStatus",
      "The observed state of a NetworkAttachment, written by IPAM (address) and by the "
      "connection agent of spec.node (interface).",
      {
          object_field("errors", &S::errors, errors(),
                       {.description = "Problems that keep the attachment from being "
                                       "implemented, by the component that found them."}),
          field("addressContention", &S::address_contention,
                {.description = "True when the subnet had no free address when IPAM wanted "
                                "one for this attachment; IPAM retries with backoff.",
                 .section = section::kAddress}),
          field("lockUID", &S::lock_uid,
                {.description = "UID of the IPLock that holds status.ipv4 for this "
                                "attachment. Written by IPAM.",
                 .section = section::kAddress}),
          field("addressVNI", &S::address_vni,
                {.description = "The VNI of the subnet the address was assigned from, 0.." +
                                std::to_string(kMaxVni) +
                                " (0: no address yet). Written by IPAM, together with ipv4.",
                 .format = "int64",
                 .minimum = 0,
                 .maximum = kMaxVni,
                 .selectable = true,
                 .section = section::kAddress}),
          field("ipv4", &S::ipv4,
                {.description = "The IPv4 address assigned to the attachment, dotted quad "
                                "without prefix length. Written by IPAM.",
                 .selectable = true,
                 .section = section::kAddress},
                FieldRule<std::string>(rules::ipv4_address)),
          field("gateway", &S::gateway,
                {.description = "Attachments on a subnet of a VPC: the gateway address the "
                                "guest routes through (the Subnet's status.gateway). Written "
                                "by IPAM, together with ipv4.",
                 .section = section::kAddress},
                FieldRule<std::string>(rules::ipv4_address)),
          field("prefixLength", &S::prefix_length,
                {.description = "Attachments on a subnet of a VPC: the prefix length of the "
                                "subnet's range, for the guest's address and the gateway's. "
                                "Written by IPAM, together with ipv4.",
                 .format = "int32",
                 .minimum = 0,
                 .maximum = 32,
                 .section = section::kAddress}),
          field("routes", &S::routes,
                {.description = "Attachments on a subnet of a VPC: the destinations (CIDRs) "
                                "the guest routes through the gateway. Written by IPAM, "
                                "together with ipv4.",
                 .section = section::kAddress}),
          field("routingVNI", &S::routing_vni,
                {.description = "Attachments on a subnet of a VPC: the VPC's VNI (0: not "
                                "routed). Nodes watch the attachments of the VPCs they host "
                                "by this field. Written by IPAM, together with ipv4.",
                 .format = "int64",
                 .minimum = 0,
                 .maximum = kMaxVni,
                 .selectable = true,
                 .section = section::kAddress}),
          field("macAddress", &S::mac_address,
                {.description = "MAC address of the interface, derived from the IPv4 address "
                                "and the VNI. Written by the connection agent.",
                 .section = section::kImpl},
                FieldRule<std::string>(rules::mac_address)),
          field("ifcName", &S::ifc_name,
                {.description = "Name of the network interface on the node: \"kos\" followed "
                                "by the 12 hex digits of the MAC address. Set by the "
                                "connection agent once the interface exists; the attachment "
                                "is ready when this is set.",
                 .section = section::kImpl}),
          field("hostIP", &S::host_ip,
                {.description = "IP address of the node that implements the attachment (its "
                                "VXLAN tunnel endpoint). Written by the connection agent.",
                 .selectable = true,
                 .section = section::kImpl}),
          object_field("postCreateExecReport", &S::post_create_exec_report, exec_report(),
                       {.description = "The outcome of running spec.postCreateExec, absent "
                                       "until it ran. Written by the connection agent.",
                        .section = section::kExecReport}),
          list_field("securityGroupsInForce", &S::security_groups_in_force, group_revision(),
                     {.description = "The SecurityGroups of spec.securityGroups whose rules are "
                                     "in force on the attachment's interface, each at the "
                                     "resourceVersion programmed, with the members of the "
                                     "groups their rules name as the node's watch of them had "
                                     "them. A group that does not exist is listed with an "
                                     "empty resourceVersion (it allows nothing). Written by "
                                     "the connection agent; when it lists every group of "
                                     "spec.securityGroups at their current versions, the "
                                     "attachment's policy is in force.",
                      .section = section::kPolicy}),
      }};
  return d;
}

std::string errors_cell(const NA& na) {
  std::vector<std::string> errs = na.status.errors.ipam;
  errs.insert(errs.end(), na.status.errors.host.begin(), na.status.errors.host.end());
  return describe_detail::text_of(errs);
}

KindDesc<NA> make() {
  KindDesc<NA> d;
  d.kind = Kind::kNetworkAttachment;
  d.description =
      "A NetworkAttachment (short name na) is a network interface of a guest on one node, "
      "attached to one Subnet. IPAM assigns it an IPv4 address from the subnet (holding it "
      "with an IPLock); then the connection agent of the node creates the interface and "
      "connects it to the other attachments of the same virtual network. It is ready when "
      "status.ifcName is set.";
  d.spec_description =
      "The desired state of the attachment: where it lives and what to run when its "
      "interface is created or deleted.";
  d.status_description =
      "The observed state of the attachment: its address (from IPAM) and its interface "
      "(from the connection agent).";
  d.spec_desc = &spec();
  d.status_desc = &status();
  // spec.securityGroups before the VNIs: a watch of one group's members in one VNI is indexed
  // by its group (few events), not by its VNI (every event of the VNI).
  d.indexed_fields = {"spec.node", "spec.securityGroups", "status.addressVNI", "status.routingVNI"};
  d.sections = {section::kSpec, section::kAddress, section::kImpl, section::kExecReport,
                section::kPolicy};
  d.columns = {
      field_column<NA>("Subnet", "spec.subnet", "Subnet the attachment is on"),
      field_column<NA>("Node", "spec.node", "Node that implements it"),
      field_column<NA>("IPv4", "status.ipv4", "Assigned guest address"),
      field_column<NA>("MAC", "status.macAddress", "Guest MAC address"),
      field_column<NA>("HostIP", "status.hostIP", "Underlay address of the node"),
      field_column<NA>("Ifc", "status.ifcName", "Name of the Linux interface"),
      {"Errors", "string", "IPAM and host errors", 1,
       [](const NA& na) { return boost::json::value(errors_cell(na)); }},
      field_column<NA>("VNI", "status.addressVNI", "VNI of the assigned address", 1),
      field_column<NA>("Groups", "spec.securityGroups", "Security groups it is in", 1),
  };
  d.finish();
  return d;
}

}  // namespace

template <>
const KindDesc<NetworkAttachment>& describe<NetworkAttachment>() {
  static const KindDesc<NetworkAttachment> d = make();
  return d;
}

}  // namespace kos::api
