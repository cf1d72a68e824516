#include "apiserver/authentication.h"

#include <sys/stat.h>

#include <sstream>

#include "pki/pki.h"

namespace kos::apiserver {
namespace bhttp = boost::beast::http;

Result<std::optional<UserInfo>> CertificateAuthenticator::authenticate(const http::Request&,
                                                                        const http::Peer& peer) {
  if (!peer.tls || !peer.has_cert) return std::optional<UserInfo>{};
  if (peer.cert_common_name.empty())
    return fail(Errc::kUnauthorized, "the client certificate has no common name (CN): it names no user");
  return std::optional<UserInfo>{UserInfo{peer.cert_common_name, "", peer.cert_organizations}};
}

namespace {

std::string trim(std::string s) {
  auto b = s.find_first_not_of(" \t\r");
  auto e = s.find_last_not_of(" \t\r");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

// Splits one CSV line: fields separated by commas, a field may be "quoted" (with "" for
// a quote inside).
Result<std::vector<std::string>> csv_fields(const std::string& line) {
  std::vector<std::string> out;
  std::string cur;
  size_t i = 0;
  bool quoted_field = false;
  while (i <= line.size()) {
    if (i == line.size() || line[i] == ',') {
      out.push_back(quoted_field ? cur : trim(cur));
      cur.clear();
      quoted_field = false;
      ++i;
      continue;
    }
    if (line[i] == '"' && trim(cur).empty()) {
      cur.clear();
      quoted_field = true;
      ++i;
      for (;;) {
        if (i >= line.size()) return fail(Errc::kBadRequest, "unterminated quote");
        if (line[i] == '"') {
          if (i + 1 < line.size() && line[i + 1] == '"') {
            cur += '"';
            i += 2;
            continue;
          }
          ++i;
          break;
        }
        cur += line[i++];
      }
      while (i < line.size() && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r')) ++i;
      if (i < line.size() && line[i] != ',') return fail(Errc::kBadRequest, "text after a quoted field");
      continue;
    }
    cur += line[i++];
  }
  return out;
}

}  // namespace

Result<std::map<std::string, UserInfo>> TokenFileAuthenticator::parse(const std::string& content,
                                                                       const std::string& path) {
  std::map<std::string, UserInfo> tokens;
  std::istringstream in(content);
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    std::string t = trim(line);
    if (t.empty() || t[0] == '#') continue;
    auto where = [&] { return "token file " + path + " line " + std::to_string(n) + ": "; };
    auto f = csv_fields(t);
    if (!f) return fail(Errc::kBadRequest, where() + f.error().message);
    if (f->size() < 3 || (*f)[0].empty() || (*f)[1].empty())
      return fail(Errc::kBadRequest, where() + "expected token,user,uid[,\"group1,group2\"]");
    UserInfo u{(*f)[1], (*f)[2], {}};
    if (f->size() >= 4) {
      std::istringstream gs((*f)[3]);
      std::string g;
      while (std::getline(gs, g, ','))
        if (!trim(g).empty()) u.groups.push_back(trim(g));
    }
    if (!tokens.emplace((*f)[0], std::move(u)).second)
      return fail(Errc::kBadRequest, where() + "the token is listed twice");
  }
  return tokens;
}

Result<std::unique_ptr<TokenFileAuthenticator>> TokenFileAuthenticator::open(const std::string& path) {
  std::unique_ptr<TokenFileAuthenticator> a(new TokenFileAuthenticator(path));
  if (auto r = a->reload_if_changed(); !r) return fail(r.error());
  return a;
}

Result<void> TokenFileAuthenticator::reload_if_changed() {
  struct stat st{};
  if (::stat(path_.c_str(), &st) != 0) return fail(Errc::kNotFound, "token file " + path_ + " not found");
  int64_t mtime = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  if (mtime == mtime_ns_ && static_cast<uintmax_t>(st.st_size) == size_) return {};
  auto content = pki::read_file(path_);
  if (!content) return fail(content.error());
  auto tokens = parse(*content, path_);
  if (!tokens) return fail(tokens.error());
  tokens_ = std::move(*tokens);
  mtime_ns_ = mtime;
  size_ = static_cast<uintmax_t>(st.st_size);
  return {};
}

Result<std::optional<UserInfo>> TokenFileAuthenticator::authenticate(const http::Request& req,
                                                                      const http::Peer&) {
  auto h = req[bhttp::field::authorization];
  if (h.empty()) return std::optional<UserInfo>{};
  if (h.size() < 7 || !(h.substr(0, 7) == "Bearer " || h.substr(0, 7) == "bearer "))
    return std::optional<UserInfo>{};  // another scheme: not ours
  std::string token = trim(std::string(h.substr(7)));
  std::lock_guard lk(mu_);
  auto now = std::chrono::steady_clock::now();
  if (now - checked_ >= std::chrono::seconds(1)) {
    checked_ = now;
    // A file being rewritten badly keeps the tokens read last (logged by the caller's
    // 401s if it matters); a valid new file replaces them.
    (void)reload_if_changed();
  }
  auto it = tokens_.find(token);
  if (it == tokens_.end()) {
    // A token issued a moment ago (kos credentials create --token) is in the file already:
    // look again now (a stat, and a read only if the file changed).
    (void)reload_if_changed();
    it = tokens_.find(token);
  }
  if (it == tokens_.end()) return fail(Errc::kUnauthorized, "invalid bearer token");
  return std::optional<UserInfo>{it->second};
}

Result<std::optional<UserInfo>> AuthenticatorChain::authenticate(const http::Request& req,
                                                                  const http::Peer& peer) {
  for (auto& a : chain_) {
    auto r = a->authenticate(req, peer);
    if (!r || *r) return r;
  }
  return std::optional<UserInfo>{};
}

}  // namespace kos::apiserver
