#include "up/credentials.h"

#include "apiserver/authorization.h"
#include "client/kubeconfig.h"
#include "pki/pki.h"

namespace kos::up {

Result<std::string> write_credential_kubeconfig(const CredentialRequest& req, const std::string& path) {
  auto user = apiserver::user_for_role(req.role, req.scope, req.user);
  if (!user) return fail(user.error());
  auto ca = pki::load_ca(req.pki_dir);
  if (!ca) return fail(ca.error());
  client::KubeconfigContent kc;
  kc.server = req.server;
  kc.more_servers = req.more_servers;
  kc.ca_pem = ca->cert_pem;
  kc.ns = req.role == "tenant" ? req.scope : req.ns;
  const pki::Subject subject{user->name, user->groups};
  if (req.token) {
    auto t = pki::add_token(req.pki_dir, subject);
    if (!t) return fail(t.error());
    kc.token = *t;
  } else {
    pki::IssueOptions io;
    io.subject = subject;
    io.validity = req.validity;
    auto c = pki::issue(*ca, io);
    if (!c) return fail(c.error());
    kc.cert_pem = c->cert_pem;
    kc.key_pem = c->key_pem;
  }
  if (auto w = client::write_kubeconfig(path, kc); !w) return fail(w.error());
  return user->name;
}

}  // namespace kos::up
