#include "store/open.h"

#include <string_view>

#include "store/etcd/etcd_store.h"
#include "store/sqlite/sqlite_store.h"

namespace kos::store {

Result<std::unique_ptr<Store>> open_store(const std::string& url, const OpenOptions& opts) {
  std::string_view u = url;
  if (u.starts_with("sqlite:")) {
    std::string path(u.substr(7));
    if (path.empty()) return fail(Errc::kBadRequest, "store URL " + url + ": missing file path");
    SqliteOptions so;
    so.path = std::move(path);
    so.compaction_interval = opts.compaction_interval;
    return SqliteStore::open(so);
  }
  if (u.starts_with("etcd:")) {
    std::vector<std::string> endpoints;
    std::string_view rest = u.substr(5);
    while (!rest.empty()) {
      auto comma = rest.find(',');
      std::string_view ep = rest.substr(0, comma);
      if (!ep.starts_with("http://") && !ep.starts_with("https://"))
        return fail(Errc::kBadRequest, "store URL " + url + ": etcd endpoint '" +
                                           std::string(ep) + "' must look like http://HOST:PORT or https://HOST:PORT");
      endpoints.emplace_back(ep);
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
    if (endpoints.empty())
      return fail(Errc::kBadRequest, "store URL " + url + ": no etcd endpoint given");
    return EtcdStore::open(endpoints, opts);
  }
  return fail(Errc::kBadRequest, "store URL " + url +
                                     ": expected sqlite:PATH or etcd:http(s)://HOST:PORT[,...]");
}

}  // namespace kos::store
