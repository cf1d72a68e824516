// nftables through libnftables (Debian's libnftables-dev): commands as nft text, each call
// one transaction (the kernel applies all of a buffer's commands or none), listings as
// JSON. No `nft` program is run.
//
// Threads and namespaces. A context opens its netfilter socket when it is made (nft_ctx_new),
// in the network namespace of the thread that makes it, and keeps working there whatever
// that thread does afterwards. libnftables 1.0.6 keeps process-wide state that is not
// thread-safe (its one-time initialisation, the interface cache it fills and releases on
// every command), so every call into the library, of any context, holds one process-wide
// mutex. Use a context from one thread at a time.
#pragma once

#include <string>

#include <boost/json.hpp>

#include "common/error.h"

struct nft_ctx;

namespace kos::fabric::nft {

class Context {
 public:
  Context() = default;
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  // Makes the context in the calling thread's network namespace. kUnsupported if this
  // kernel has no nf_tables netlink (libnftables would exit the process on it, so the
  // fabric probes first). `where` is appended to errors (" in netns n0").
  Result<void> open(const std::string& where);
  bool is_open() const { return ctx_ != nullptr; }

  // Runs `commands` (nft syntax, one per line) as one transaction; the error is nft's own
  // message (kInternal).
  Result<void> run(const std::string& commands);
  // Runs a list command (e.g. "list table inet kos") and parses its JSON output.
  Result<boost::json::value> list(const std::string& command);

 private:
  Result<std::string> exec(const std::string& commands, bool json);
  nft_ctx* ctx_ = nullptr;
  std::string where_;
};

}  // namespace kos::fabric::nft
