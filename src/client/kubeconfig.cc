#include "client/kubeconfig.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

namespace kos::client {

namespace {

namespace fs = std::filesystem;

std::string quote(const std::string& s) { return "\"" + s + "\""; }

// "clusters[0]: name" or, at the top level, "kind".
std::string field(const std::string& where, const char* key) {
  return where.empty() ? std::string(key) : where + ": " + key;
}

// Reads a whole file. Errors: kNotFound (missing), kBadRequest (a directory), kInternal.
Result<std::string> read_whole_file(const fs::path& p) {
  std::error_code ec;
  auto st = fs::status(p, ec);
  if (st.type() == fs::file_type::not_found) return fail(Errc::kNotFound, "no such file");
  if (st.type() == fs::file_type::directory) return fail(Errc::kBadRequest, "is a directory");
  std::ifstream f(p, std::ios::binary);
  if (!f) return fail(Errc::kInternal, std::string("cannot open: ") + std::strerror(errno));
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) return fail(Errc::kInternal, "read error");
  return ss.str();
}

// Standard base64 with padding, as Go's encoding/base64.StdEncoding; whitespace (line
// breaks in wrapped data) is skipped.
Result<std::string> base64_decode(const std::string& in) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string chars;
  for (char c : in)
    if (c != ' ' && c != '\n' && c != '\r' && c != '\t') chars += c;
  if (chars.size() % 4 != 0) return fail(Errc::kBadRequest, "invalid base64 (truncated)");
  std::string out;
  for (size_t i = 0; i < chars.size(); i += 4) {
    const bool last = i + 4 == chars.size();
    int v[4];
    int pad = 0;
    for (int j = 0; j < 4; ++j) {
      char c = chars[i + j];
      if (c == '=' && last && j >= 2) {
        ++pad;
        v[j] = 0;
        continue;
      }
      if (pad > 0 || (v[j] = value(c)) < 0)
        return fail(Errc::kBadRequest, "invalid base64 (unexpected character)");
    }
    uint32_t n = (uint32_t(v[0]) << 18) | (uint32_t(v[1]) << 12) | (uint32_t(v[2]) << 6) |
                 uint32_t(v[3]);
    out += static_cast<char>((n >> 16) & 0xff);
    if (pad < 2) out += static_cast<char>((n >> 8) & 0xff);
    if (pad < 1) out += static_cast<char>(n & 0xff);
  }
  return out;
}

struct ServerUrl {
  std::string scheme, host;
  uint16_t port = 0;
  bool ipv6 = false;
};

// scheme://host[:port][/]. Without a scheme, https when TLS settings are present (as
// client-go's DefaultServerURL), else http.
Result<ServerUrl> parse_server(const std::string& s, bool default_tls) {
  auto bad = [&](const std::string& why) {
    return fail(Errc::kBadRequest, "invalid server URL " + quote(s) + ": " + why);
  };
  ServerUrl u;
  std::string rest;
  if (auto p = s.find("://"); p != std::string::npos) {
    u.scheme = s.substr(0, p);
    for (char& c : u.scheme) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    rest = s.substr(p + 3);
  } else {
    u.scheme = default_tls ? "https" : "http";
    rest = s;
  }
  if (u.scheme != "http" && u.scheme != "https") return bad("the scheme must be http or https");
  size_t end = rest.find_first_of("/?#");
  std::string authority = rest.substr(0, end);
  if (end != std::string::npos && rest.substr(end) != "/")
    return bad("a path, query or fragment is not supported");
  if (authority.find('@') != std::string::npos) return bad("user info is not supported");
  std::string port_text;
  if (!authority.empty() && authority[0] == '[') {
    auto close = authority.find(']');
    if (close == std::string::npos) return bad("unterminated IPv6 address");
    u.host = authority.substr(1, close - 1);
    u.ipv6 = true;
    std::string after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') return bad("unexpected text after the IPv6 address");
      port_text = after.substr(1);
      if (port_text.empty()) return bad("empty port");
    }
    for (char c : u.host)
      if (!std::isxdigit(static_cast<unsigned char>(c)) && c != ':' && c != '.' && c != '%')
        return bad("invalid IPv6 address");
  } else {
    auto colon = authority.find(':');
    if (colon != std::string::npos && authority.find(':', colon + 1) != std::string::npos)
      return bad("an IPv6 address must be in brackets");
    u.host = authority.substr(0, colon);
    if (colon != std::string::npos) {
      port_text = authority.substr(colon + 1);
      if (port_text.empty()) return bad("empty port");
    }
    for (char c : u.host)
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != '_')
        return bad("invalid host name");
  }
  if (u.host.empty()) return bad("no host");
  if (port_text.empty()) {
    u.port = u.scheme == "https" ? 443 : 80;
  } else {
    if (port_text.size() > 5) return bad("invalid port");
    unsigned long port = 0;
    for (char c : port_text) {
      if (!std::isdigit(static_cast<unsigned char>(c))) return bad("invalid port");
      port = port * 10 + static_cast<unsigned long>(c - '0');
    }
    if (port == 0 || port > 65535) return bad("port out of range");
    u.port = static_cast<uint16_t>(port);
  }
  return u;
}

std::string canonical(const ServerUrl& u) {
  return u.scheme + "://" + (u.ipv6 ? "[" + u.host + "]" : u.host) + ":" + std::to_string(u.port);
}

// One kubeconfig being read: errors name the file.
class Loader {
 public:
  explicit Loader(std::string path) : path_(std::move(path)) {}

  Result<RestConfig> load(const std::string& context);

 private:
  std::unexpected<Error> err(Errc code, const std::string& msg) const {
    return fail(code, "kubeconfig " + path_ + ": " + msg);
  }
  // A string field: "" when absent or null; an error when not a scalar.
  Result<std::string> str(const YAML::Node& parent, const char* key,
                          const std::string& where) const;
  Result<bool> boolean(const YAML::Node& parent, const char* key, const std::string& where) const;
  // A list of {name: N, <body>: {...}} as name -> body (null when absent).
  Result<std::map<std::string, YAML::Node>> section(const YAML::Node& root, const char* list,
                                                    const char* body) const;
  // The contents of a *-data field (base64) or of a file field, whichever is set.
  Result<std::string> data_or_file(const YAML::Node& n, const char* data_key,
                                   const char* file_key, const std::string& where) const;
  Result<std::string> read_relative(const std::string& file, const std::string& what) const;
  // The servers listed in the cluster's kServersExtension (none when it has none).
  Result<std::vector<ServerUrl>> servers_extension(const YAML::Node& cl, const std::string& where,
                                                   bool default_tls) const;

  std::string path_;
};

Result<std::string> Loader::str(const YAML::Node& parent, const char* key,
                                const std::string& where) const {
  const YAML::Node n = parent[key];
  if (!n || n.IsNull()) return std::string();
  if (!n.IsScalar()) return err(Errc::kBadRequest, field(where, key) + ": expected a string");
  return n.Scalar();
}

Result<bool> Loader::boolean(const YAML::Node& parent, const char* key,
                             const std::string& where) const {
  const YAML::Node n = parent[key];
  if (!n || n.IsNull()) return false;
  bool v = false;
  if (!n.IsScalar() || !YAML::convert<bool>::decode(n, v))
    return err(Errc::kBadRequest, field(where, key) + ": expected true or false");
  return v;
}

Result<std::map<std::string, YAML::Node>> Loader::section(const YAML::Node& root,
                                                          const char* list,
                                                          const char* body) const {
  std::map<std::string, YAML::Node> out;
  const YAML::Node items = root[list];
  if (!items || items.IsNull()) return out;
  if (!items.IsSequence()) return err(Errc::kBadRequest, std::string(list) + ": expected a list");
  for (size_t i = 0; i < items.size(); ++i) {
    const YAML::Node item = items[i];
    std::string where = std::string(list) + "[" + std::to_string(i) + "]";
    if (!item.IsMap()) return err(Errc::kBadRequest, where + ": expected a mapping");
    auto name = str(item, "name", where);
    if (!name) return fail(name.error());
    if (name->empty()) return err(Errc::kBadRequest, where + ": no name");
    const YAML::Node b = item[body];
    if (b && !b.IsNull() && !b.IsMap())
      return err(Errc::kBadRequest, field(where, body) + ": expected a mapping");
    if (!out.emplace(*name, b ? b : YAML::Node()).second)
      return err(Errc::kBadRequest, "duplicate " + std::string(body) + " name " + quote(*name));
  }
  return out;
}

Result<std::string> Loader::read_relative(const std::string& file, const std::string& what) const {
  fs::path p(file);
  if (p.is_relative()) p = fs::path(path_).parent_path() / p;
  auto r = read_whole_file(p);
  if (!r) return err(r.error().code, what + " " + p.string() + ": " + r.error().message);
  return r;
}

Result<std::string> Loader::data_or_file(const YAML::Node& n, const char* data_key,
                                         const char* file_key, const std::string& where) const {
  auto data = str(n, data_key, where);
  if (!data) return data;
  auto file = str(n, file_key, where);
  if (!file) return file;
  if (!data->empty() && !file->empty())
    return err(Errc::kBadRequest,
               where + ": both " + data_key + " and " + file_key + " are set; use one");
  std::string pem;
  if (!data->empty()) {
    auto d = base64_decode(*data);
    if (!d) return err(Errc::kBadRequest, where + ": " + data_key + ": " + d.error().message);
    pem = std::move(*d);
  } else if (!file->empty()) {
    auto f = read_relative(*file, where + ": " + file_key);
    if (!f) return f;
    pem = std::move(*f);
  } else {
    return std::string();
  }
  if (pem.find("-----BEGIN ") == std::string::npos)
    return err(Errc::kBadRequest,
               where + ": " + (data->empty() ? file_key : data_key) + ": not PEM (no -----BEGIN)");
  return pem;
}

Result<RestConfig> Loader::load(const std::string& context) {
  auto text = read_whole_file(path_);
  if (!text) return err(text.error().code, text.error().message);
  YAML::Node root;
  try {
    root = YAML::Load(*text);
  } catch (const YAML::Exception& e) {
    if (e.mark.is_null()) return err(Errc::kBadRequest, "invalid YAML: " + e.msg);
    return err(Errc::kBadRequest, "invalid YAML at line " + std::to_string(e.mark.line + 1) +
                                      ", column " + std::to_string(e.mark.column + 1) + ": " +
                                      e.msg);
  }
  if (!root.IsNull() && !root.IsMap())
    return err(Errc::kBadRequest, "expected a mapping at the top level");
  const YAML::Node& top = root;

  auto kind = str(top, "kind", "");
  if (!kind) return fail(kind.error());
  if (!kind->empty() && *kind != "Config")
    return err(Errc::kBadRequest, "kind is " + quote(*kind) + ", expected Config");
  auto version = str(top, "apiVersion", "");
  if (!version) return fail(version.error());
  if (!version->empty() && *version != "v1")
    return err(Errc::kBadRequest, "apiVersion is " + quote(*version) + ", expected v1");
  auto clusters = section(top, "clusters", "cluster");
  if (!clusters) return fail(clusters.error());
  auto users = section(top, "users", "user");
  if (!users) return fail(users.error());
  auto contexts = section(top, "contexts", "context");
  if (!contexts) return fail(contexts.error());
  auto current = str(top, "current-context", "");
  if (!current) return fail(current.error());

  const std::string ctx_name = context.empty() ? *current : context;
  if (ctx_name.empty())
    return err(Errc::kBadRequest, "no context given and current-context is not set");
  auto ctx_it = contexts->find(ctx_name);
  if (ctx_it == contexts->end())
    return err(context.empty() ? Errc::kBadRequest : Errc::kNotFound,
               "context " + quote(ctx_name) + " not found");
  const YAML::Node ctx = ctx_it->second;
  const std::string ctx_where = "context " + quote(ctx_name);
  auto cluster_name = str(ctx, "cluster", ctx_where);
  if (!cluster_name) return fail(cluster_name.error());
  auto user_name = str(ctx, "user", ctx_where);
  if (!user_name) return fail(user_name.error());
  auto ns = str(ctx, "namespace", ctx_where);
  if (!ns) return fail(ns.error());
  if (cluster_name->empty()) return err(Errc::kBadRequest, ctx_where + " has no cluster");

  RestConfig rc;
  if (!ns->empty()) rc.ns = *ns;

  // The cluster.
  auto cl_it = clusters->find(*cluster_name);
  if (cl_it == clusters->end())
    return err(Errc::kBadRequest, ctx_where + ": cluster " + quote(*cluster_name) + " not found");
  const YAML::Node cl = cl_it->second;
  const std::string cl_where = "cluster " + quote(*cluster_name);
  auto server = str(cl, "server", cl_where);
  if (!server) return fail(server.error());
  if (server->empty()) return err(Errc::kBadRequest, cl_where + " has no server");
  auto insecure = boolean(cl, "insecure-skip-tls-verify", cl_where);
  if (!insecure) return fail(insecure.error());
  auto ca = data_or_file(cl, "certificate-authority-data", "certificate-authority", cl_where);
  if (!ca) return fail(ca.error());
  if (*insecure && !ca->empty())
    return err(Errc::kBadRequest,
               cl_where + ": insecure-skip-tls-verify cannot be combined with a certificate "
                          "authority");
  rc.ca_pem = std::move(*ca);
  rc.insecure_skip_verify = *insecure;

  // The user (a context may have none: anonymous access).
  if (!user_name->empty()) {
    auto u_it = users->find(*user_name);
    if (u_it == users->end())
      return err(Errc::kBadRequest, ctx_where + ": user " + quote(*user_name) + " not found");
    const YAML::Node u = u_it->second;
    const std::string u_where = "user " + quote(*user_name);
    for (auto [key, what] : {std::pair{"exec", "credential plugins are"},
                             std::pair{"auth-provider", "auth providers are"},
                             std::pair{"username", "basic authentication is"},
                             std::pair{"password", "basic authentication is"}}) {
      const YAML::Node n = u[key];
      if (n && !n.IsNull())
        return err(Errc::kUnsupported,
                   u_where + ": " + key + ": " + what + " not supported by KOS clients");
    }
    auto cert = data_or_file(u, "client-certificate-data", "client-certificate", u_where);
    if (!cert) return fail(cert.error());
    auto key = data_or_file(u, "client-key-data", "client-key", u_where);
    if (!key) return fail(key.error());
    if (cert->empty() != key->empty())
      return err(Errc::kBadRequest, u_where + ": " +
                                        (cert->empty() ? "a client key without a certificate"
                                                       : "a client certificate without a key"));
    rc.cert_pem = std::move(*cert);
    rc.key_pem = std::move(*key);
    auto token = str(u, "token", u_where);
    if (!token) return fail(token.error());
    auto token_file = str(u, "tokenFile", u_where);
    if (!token_file) return fail(token_file.error());
    if (!token->empty()) {
      rc.bearer_token = *token;  // token wins over tokenFile, as in client-go
    } else if (!token_file->empty()) {
      auto t = read_relative(*token_file, u_where + ": tokenFile");
      if (!t) return fail(t.error());
      auto first = t->find_first_not_of(" \t\r\n");
      auto last = t->find_last_not_of(" \t\r\n");
      if (first == std::string::npos)
        return err(Errc::kBadRequest, u_where + ": tokenFile " + *token_file + " is empty");
      rc.bearer_token = t->substr(first, last - first + 1);
    }
  }

  const bool has_tls_settings = !rc.ca_pem.empty() || !rc.cert_pem.empty() || *insecure;
  auto url = parse_server(*server, has_tls_settings);
  if (!url) return err(Errc::kBadRequest, cl_where + ": " + url.error().message);
  rc.tls = url->scheme == "https";
  rc.host = url->host;
  rc.port = url->port;
  rc.server = canonical(*url);
  auto more = servers_extension(cl, cl_where, has_tls_settings);
  if (!more) return fail(more.error());
  if (!more->empty()) {
    rc.endpoints.push_back({rc.server, rc.host, rc.port});
    for (const auto& u : *more) {
      if (u.scheme != url->scheme)
        return err(Errc::kBadRequest, cl_where + ": extension " + kServersExtension + ": server " +
                                          quote(canonical(u)) + " is " + u.scheme + " but server " +
                                          quote(rc.server) + " is " + url->scheme +
                                          " (one deployment's API servers share the scheme)");
      Endpoint e{canonical(u), u.host, u.port};
      if (std::find(rc.endpoints.begin(), rc.endpoints.end(), e) == rc.endpoints.end())
        rc.endpoints.push_back(std::move(e));
    }
    if (rc.endpoints.size() == 1) rc.endpoints.clear();
  }
  return rc;
}

Result<std::vector<ServerUrl>> Loader::servers_extension(const YAML::Node& cl, const std::string& where,
                                                         bool default_tls) const {
  std::vector<ServerUrl> out;
  const YAML::Node exts = cl["extensions"];
  if (!exts || exts.IsNull()) return out;
  if (!exts.IsSequence()) return err(Errc::kBadRequest, field(where, "extensions") + ": expected a list");
  for (size_t i = 0; i < exts.size(); ++i) {
    const YAML::Node item = exts[i];
    const std::string at = field(where, "extensions") + "[" + std::to_string(i) + "]";
    if (!item.IsMap()) return err(Errc::kBadRequest, at + ": expected a mapping");
    auto name = str(item, "name", at);
    if (!name) return fail(name.error());
    if (*name != kServersExtension) continue;  // someone else's
    const YAML::Node ext = item["extension"];
    const YAML::Node servers = ext && ext.IsMap() ? ext["servers"] : YAML::Node();
    if (!servers || !servers.IsSequence() || servers.size() == 0)
      return err(Errc::kBadRequest, at + " (" + kServersExtension +
                                        "): extension.servers: expected a list of server URLs");
    for (size_t j = 0; j < servers.size(); ++j) {
      const std::string sat = at + ".extension.servers[" + std::to_string(j) + "]";
      if (!servers[j].IsScalar()) return err(Errc::kBadRequest, sat + ": expected a string");
      auto u = parse_server(servers[j].Scalar(), default_tls);
      if (!u) return err(Errc::kBadRequest, sat + ": " + u.error().message);
      out.push_back(std::move(*u));
    }
  }
  return out;
}

}  // namespace

std::vector<Endpoint> RestConfig::all_endpoints() const {
  if (!endpoints.empty()) return endpoints;
  return {Endpoint{server, host, port}};
}

Result<RestConfig> load_kubeconfig(const std::string& path, const std::string& context) {
  return Loader(path).load(context);
}

Result<std::string> kubeconfig_path(const std::string& path_flag) {
  if (!path_flag.empty()) return path_flag;
  if (const char* env = std::getenv("KUBECONFIG"); env && *env) {
    std::string list(env);
    size_t start = 0;
    while (start <= list.size()) {
      size_t end = list.find(':', start);
      if (end == std::string::npos) end = list.size();
      if (end > start) return list.substr(start, end - start);
      start = end + 1;
    }
  }
  if (const char* home = std::getenv("HOME"); home && *home)
    return (fs::path(home) / ".kube" / "config").string();
  return fail(Errc::kNotFound,
              "no kubeconfig: pass its path, or set $KUBECONFIG or $HOME (for ~/.kube/config)");
}

Result<RestConfig> config_from_env_or_file(const std::string& path_flag) {
  auto path = kubeconfig_path(path_flag);
  if (!path) return fail(path.error());
  return load_kubeconfig(*path);
}

namespace {

std::string base64_encode(const std::string& in) {
  static const char* t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    unsigned v = (static_cast<unsigned char>(in[i]) << 16) | (static_cast<unsigned char>(in[i + 1]) << 8) |
                 static_cast<unsigned char>(in[i + 2]);
    out += t[(v >> 18) & 63];
    out += t[(v >> 12) & 63];
    out += t[(v >> 6) & 63];
    out += t[v & 63];
  }
  if (i + 1 == in.size()) {
    unsigned v = static_cast<unsigned char>(in[i]) << 16;
    out += t[(v >> 18) & 63];
    out += t[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == in.size()) {
    unsigned v = (static_cast<unsigned char>(in[i]) << 16) | (static_cast<unsigned char>(in[i + 1]) << 8);
    out += t[(v >> 18) & 63];
    out += t[(v >> 12) & 63];
    out += t[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

}  // namespace

std::string kubeconfig_yaml(const KubeconfigContent& c) {
  std::string y = "apiVersion: v1\nkind: Config\nclusters:\n- name: " + c.name + "\n  cluster:\n    server: " +
                  c.server + "\n";
  if (!c.more_servers.empty()) {
    y += "    extensions:\n    - name: " + std::string(kServersExtension) + "\n      extension:\n        servers:\n";
    y += "        - " + c.server + "\n";
    for (const auto& m : c.more_servers) y += "        - " + m + "\n";
  }
  if (!c.ca_pem.empty()) y += "    certificate-authority-data: " + base64_encode(c.ca_pem) + "\n";
  y += "contexts:\n- name: " + c.name + "\n  context:\n    cluster: " + c.name + "\n    user: " + c.name +
       "\n    namespace: " + c.ns + "\ncurrent-context: " + c.name + "\nusers:\n- name: " + c.name + "\n  user:";
  if (c.cert_pem.empty() && c.token.empty()) return y + " {}\n";
  y += "\n";
  if (!c.cert_pem.empty())
    y += "    client-certificate-data: " + base64_encode(c.cert_pem) + "\n    client-key-data: " +
         base64_encode(c.key_pem) + "\n";
  if (!c.token.empty()) y += "    token: " + c.token + "\n";
  return y;
}

Result<void> write_kubeconfig(const std::string& path, const KubeconfigContent& c) {
  std::filesystem::path p(path);
  std::error_code ec;
  if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path(), ec);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    if (!f) return fail(Errc::kInternal, "cannot write kubeconfig " + tmp);
    std::filesystem::permissions(tmp, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write,
                                 std::filesystem::perm_options::replace, ec);
    f << kubeconfig_yaml(c);
    if (!f.flush()) return fail(Errc::kInternal, "cannot write kubeconfig " + tmp);
  }
  std::filesystem::rename(tmp, path, ec);
  if (ec) return fail(Errc::kInternal, "cannot write kubeconfig " + path + ": " + ec.message());
  return {};
}

}  // namespace kos::client
