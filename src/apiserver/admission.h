// Stage 4 of the request pipeline: admission, the checks that need the objects.
//
// SubnetAdmission: a Subnet may not overlap another Subnet of its VNI (best effort against
// the watch caches; the subnet validator and the IPAM are the guarantee).
//
// UserAdmission: what a user may write depends on the object, not only on the URL
// (Kubernetes's NodeRestriction): a node writes only attachments whose spec.node is its
// name, and in their status only what the agent owns (the interface, MAC, host IP, host
// errors, the exec report); only admins and controllers set IPAM fields or
// status.validated; postCreateExec and postDeleteExec make a node run a program, so only
// admins and the node itself (its CNI attachments) may set them.
#pragma once

#include "apiserver/authentication.h"
#include "apiserver/registry.h"

namespace kos::apiserver {

class SubnetAdmission : public Admission {
 public:
  SubnetAdmission(const WatchCache& subnets, const WatchCache& locks) : cache_(subnets), locks_(locks) {}
  Result<void> admit(const boost::json::object* old_obj, const boost::json::object& obj) const override;

 private:
  const WatchCache& cache_;
  const WatchCache& locks_;
};

class UserAdmission : public Admission {
 public:
  UserAdmission(UserInfo user, const ResourceInfo& info) : user_(std::move(user)), info_(info) {}
  Result<void> admit(const boost::json::object* old_obj, const boost::json::object& obj) const override;
  Result<void> admit_delete(const boost::json::object& cur) const override;

 private:
  Result<void> admit_attachment(const boost::json::object* old_obj, const boost::json::object& obj) const;
  std::unexpected<Error> forbidden(const boost::json::object& obj, const std::string& why) const;

  UserInfo user_;
  const ResourceInfo& info_;
};

}  // namespace kos::apiserver
