#pragma once

#include "store/conformance/backend.h"
#include "test/support/process.h"

namespace kos::store::testing {

// The embedded store on a file in a temporary directory.
class SqliteBackend : public Backend {
 public:
  SqliteBackend() : dir_("kos-sqlite") {}
  std::string name() const override { return "sqlite"; }
  std::string url() const override { return "sqlite:" + (dir_.path() / "kos.db").string(); }
  Result<std::unique_ptr<Store>> open(const OpenOptions& opts) override {
    return open_store(url(), opts);
  }
  // The writer process is the only holder of the file; the test kills it.
  void crash_store() override {}
  void recover_store() override {}

 private:
  kos::testing::TempDir dir_;
};

}  // namespace kos::store::testing
