// A storage backend under test. The conformance suite (store_conformance_test.cc) runs
// every test against each Backend; a Backend owns whatever the store needs (a temporary
// SQLite file, a real etcd server process) and removes it in its destructor.
#pragma once

#include <memory>
#include <string>

#include "common/error.h"
#include "store/open.h"
#include "store/store.h"

namespace kos::store::testing {

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  // The URL for open_store(), also handed to writer processes the tests start.
  virtual std::string url() const = 0;
  // A new client of the same underlying data.
  virtual Result<std::unique_ptr<Store>> open(const OpenOptions& opts = {}) = 0;
  // Kills (SIGKILL) whatever process holds the data, other than writer processes the test
  // started itself: for etcd the server; for SQLite nothing (the writer holds the file).
  virtual void crash_store() = 0;
  // Brings the store back after crash_store() on the same data and waits until it serves.
  virtual void recover_store() = 0;
};

}  // namespace kos::store::testing
