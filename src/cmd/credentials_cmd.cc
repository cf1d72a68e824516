// kos credentials create: a credential for a role, written as a kubeconfig.
#include <cstdio>
#include <filesystem>

#include "cmd/commands.h"
#include "common/duration.h"
#include "pki/pki.h"
#include "up/credentials.h"

namespace kos::cmd {
namespace {

struct Flags {
  std::string data_dir = "/var/lib/kos";
  std::string pki_dir;
  std::string node, role, ns, user;
  bool cert = false, token = false;
  std::vector<std::string> servers{"https://127.0.0.1:6443"};
  std::string out;
  std::string validity = "8760h";
};

int run_create(const Flags& f) {
  if (f.node.empty() == f.role.empty()) {
    std::fprintf(stderr, "kos credentials create: give exactly one of --node NAME and --role ROLE\n");
    return 2;
  }
  if (f.cert && f.token) {
    std::fprintf(stderr, "kos credentials create: --cert and --token exclude each other\n");
    return 2;
  }
  up::CredentialRequest r;
  r.pki_dir = f.pki_dir.empty() ? (std::filesystem::path(f.data_dir) / "pki").string() : f.pki_dir;
  r.role = f.node.empty() ? f.role : "node";
  r.scope = f.node.empty() ? f.ns : f.node;
  if (!f.ns.empty()) r.ns = f.ns;
  if (r.role == "tenant" && f.ns.empty()) {
    std::fprintf(stderr, "kos credentials create: --role tenant needs --namespace NS\n");
    return 2;
  }
  r.user = f.user;
  r.token = f.token;
  r.server = f.servers.front();
  r.more_servers.assign(f.servers.begin() + 1, f.servers.end());
  auto v = parse_duration(f.validity);
  if (!v || v->count() <= 0) {
    std::fprintf(stderr, "kos credentials create: --validity %s: expected a positive duration like 720h\n",
                 f.validity.c_str());
    return 2;
  }
  r.validity = std::chrono::duration_cast<std::chrono::hours>(*v);
  if (r.validity.count() == 0) r.validity = std::chrono::hours(1);
  auto user = up::write_credential_kubeconfig(r, f.out);
  if (!user) {
    std::fprintf(stderr, "kos credentials create: %s\n", user.error().message.c_str());
    return 1;
  }
  std::printf("wrote %s: user %s, role %s%s, %s\n", f.out.c_str(), user->c_str(), r.role.c_str(),
              r.scope.empty() ? "" : (":" + r.scope).c_str(), r.token ? "bearer token" : "client certificate");
  return 0;
}

int run_init(const std::string& pki_dir, const std::vector<std::string>& sans) {
  auto p = pki::ensure_cluster_pki(pki_dir, sans);
  if (!p) {
    std::fprintf(stderr, "kos credentials init: %s\n", p.error().message.c_str());
    return 1;
  }
  std::printf("PKI in %s: ca.crt, ca.key (keep it off the cluster's nodes), apiserver.crt and apiserver.key "
              "for localhost, 127.0.0.1",
              pki_dir.c_str());
  for (const auto& s : sans) std::printf(", %s", s.c_str());
  std::printf("\n");
  return 0;
}

}  // namespace

void add_credentials_command(CLI::App& app, std::function<int()>& run) {
  auto* c = app.add_subcommand("credentials", "Issue credentials for KOS users, nodes and controllers");
  c->require_subcommand(1);
  auto f = std::make_shared<Flags>();
  auto* cr = c->add_subcommand(
      "create",
      "Issue a credential for a role and write a kubeconfig for it.\n"
      "Roles: admin (everything), controller (the controller-manager), viewer (read only),\n"
      "tenant (--namespace NS: Subnets and attachments of NS), node (--node NAME: the agent\n"
      "of node NAME). Certificates are signed by the cluster CA in the PKI dir; tokens are\n"
      "added to PKI_DIR/tokens.csv, which the API server re-reads.\n"
      "Example: kos credentials create --data-dir /var/lib/kos --node node-1 --out node-1.kubeconfig");
  cr->add_option("--node", f->node, "a node's credential (user kos:node:NAME)");
  cr->add_option("--role", f->role, "admin, controller, viewer or tenant");
  cr->add_option("--namespace", f->ns, "the tenant's namespace (and the kubeconfig's default namespace)");
  cr->add_option("--user", f->user, "the user name (default from the role)");
  cr->add_flag("--cert", f->cert, "a client certificate (the default)");
  cr->add_flag("--token", f->token, "a bearer token instead of a certificate");
  cr->add_option("--data-dir", f->data_dir, "the API server's data dir")->capture_default_str();
  cr->add_option("--pki-dir", f->pki_dir, "the cluster PKI (default: DATA_DIR/pki)");
  cr->add_option("--server", f->servers,
                 "the API server's URL, written into the kubeconfig; several (comma-separated or "
                 "repeated) for a deployment of several API servers: the first is the one kubectl "
                 "uses, KOS clients spread over all and fail over between them")
      ->delimiter(',')
      ->capture_default_str();
  cr->add_option("--out", f->out, "the kubeconfig to write (0600)")->required();
  cr->add_option("--validity", f->validity, "how long a certificate is valid")->capture_default_str();
  cr->callback([&run, f] { run = [f] { return run_create(*f); }; });

  auto pki_dir = std::make_shared<std::string>();
  auto sans = std::make_shared<std::vector<std::string>>();
  auto* in = c->add_subcommand(
      "init",
      "Make the cluster PKI without starting an API server: the CA and a serving certificate\n"
      "for the API servers' names and addresses (--tls-san), as `kos apiserver --pki-dir`\n"
      "would on its first start. For deployments whose API servers get their certificates\n"
      "from files (Kubernetes Secrets: deploy/kubernetes). Run again with more names to\n"
      "re-issue the serving certificate; the CA stays.\n"
      "Example: kos credentials init --pki-dir pki --tls-san kos-apiserver.kos-system.svc");
  in->add_option("--pki-dir", *pki_dir, "where the PKI is (made if missing)")->required();
  in->add_option("--tls-san", *sans, "a DNS name or IP address of the API servers (repeatable)");
  in->callback([&run, pki_dir, sans] { run = [pki_dir, sans] { return run_init(*pki_dir, *sans); }; });
}

}  // namespace kos::cmd
