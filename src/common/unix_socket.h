// Unix stream sockets, as the local protocols use them (the CNI plugin to its agent; the
// OVS fabric to ovsdb-server and ovs-vswitchd).
#pragma once

#include <string>
#include <string_view>

#include "common/error.h"

namespace kos {

// A connected socket (close-on-exec), or: kInvalid (path empty or too long for sun_path),
// kUnavailable (nobody listens there, or no such socket: errno's text; `what` names the
// peer in the message, e.g. "the KOS agent").
Result<int> connect_unix(const std::string& path, const std::string& what);

// Writes all of `data` (no SIGPIPE); false if the peer went away.
bool write_all(int fd, std::string_view data);

}  // namespace kos
