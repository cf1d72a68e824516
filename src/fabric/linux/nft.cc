#include "fabric/linux/nft.h"

#include <linux/netlink.h>
#include <nftables/libnftables.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>

namespace kos::fabric::nft {

namespace {

std::mutex& library_mutex() {
  static std::mutex mu;
  return mu;
}

std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace

Context::~Context() {
  if (!ctx_) return;
  std::lock_guard lk(library_mutex());
  nft_ctx_free(ctx_);
}

Result<void> Context::open(const std::string& where) {
  where_ = where;
  if (ctx_) return {};
  // nft_ctx_new exits the process if it cannot open its netlink socket: try one first.
  const int fd = ::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
  if (fd < 0) {
    return fail(Errc::kUnsupported, std::string("nftables is unavailable") + where_ +
                                        ": cannot open a netfilter netlink socket: " + std::strerror(errno));
  }
  ::close(fd);
  std::lock_guard lk(library_mutex());
  ctx_ = nft_ctx_new(NFT_CTX_DEFAULT);
  if (!ctx_) return fail(Errc::kInternal, "cannot make an nftables context" + where_);
  if (nft_ctx_buffer_output(ctx_) != 0 || nft_ctx_buffer_error(ctx_) != 0) {
    nft_ctx_free(ctx_);
    ctx_ = nullptr;
    return fail(Errc::kInternal, "cannot buffer the output of an nftables context" + where_);
  }
  return {};
}

Result<std::string> Context::exec(const std::string& commands, bool json) {
  if (!ctx_) return fail(Errc::kInternal, "the nftables context is not open" + where_);
  std::lock_guard lk(library_mutex());
  // JSON output also makes libnftables try to parse the input as JSON first: only lists.
  nft_ctx_output_set_flags(ctx_, json ? NFT_CTX_OUTPUT_JSON : 0);
  (void)nft_ctx_get_output_buffer(ctx_);  // (rewinds them)
  (void)nft_ctx_get_error_buffer(ctx_);
  const int rc = nft_run_cmd_from_buffer(ctx_, commands.c_str());
  std::string out = nft_ctx_get_output_buffer(ctx_);
  std::string err = trimmed(nft_ctx_get_error_buffer(ctx_));
  if (rc != 0) {
    if (err.empty()) err = "nft failed (" + std::to_string(rc) + ")";
    return fail(Errc::kInternal, "nftables" + where_ + ": " + err);
  }
  return out;
}

Result<void> Context::run(const std::string& commands) {
  if (auto r = exec(commands, false); !r) return fail(r.error());
  return {};
}

Result<boost::json::value> Context::list(const std::string& command) {
  auto out = exec(command, true);
  if (!out) return fail(out.error());
  boost::system::error_code ec;
  auto v = boost::json::parse(*out, ec);
  if (ec) return fail(Errc::kInternal, "nftables" + where_ + ": cannot parse the JSON of `" + command + "`: " + ec.message());
  return v;
}

}  // namespace kos::fabric::nft
