// kos store revision|get|list|compact --store URL: look inside a store and maintain it.
// kos store backup|restore FILE: copy the embedded store while a server runs, and put a
// copy back into a stopped data dir.
#include <cstdio>
#include <memory>

#include "cmd/commands.h"
#include "store/open.h"
#include "store/sqlite/backup.h"

namespace kos::cmd {
namespace {

struct StoreFlags {
  std::string url;
  std::string data_dir = "/var/lib/kos";
  std::string file;
  bool force = false;
  std::string key;
  int64_t revision = 0;
  int64_t limit = 0;
  bool keys_only = false;
};

void add_store_flag(CLI::App* c, StoreFlags& f) {
  c->add_option("--store", f.url,
                "the store: sqlite:PATH or etcd:http://HOST:PORT[,http://HOST:PORT...]")
      ->required();
}

// Opens the store, runs `body`, and turns errors into a message and exit status 1.
int with_store(const StoreFlags& f, const std::function<Result<void>(store::Store&)>& body) {
  store::OpenOptions opts;
  opts.compaction_interval = std::chrono::milliseconds(0);  // an inspection never compacts
  auto s = store::open_store(f.url, opts);
  if (!s) {
    std::fprintf(stderr, "kos store: %s\n", s.error().message.c_str());
    return 1;
  }
  if (auto r = body(**s); !r) {
    std::fprintf(stderr, "kos store: %s\n", r.error().message.c_str());
    return 1;
  }
  return 0;
}

void print_kv(const store::KeyValue& kv, bool keys_only) {
  std::printf("%s\tcreate=%lld mod=%lld version=%lld\n", kv.key.c_str(),
              static_cast<long long>(kv.create_revision), static_cast<long long>(kv.mod_revision),
              static_cast<long long>(kv.version));
  if (!keys_only) std::printf("%s\n", kv.value.c_str());
}

// The embedded store's file from --store sqlite:PATH or --data-dir D; an error for etcd.
Result<std::string> sqlite_path(const StoreFlags& f, const char* verb) {
  if (f.url.empty()) return f.data_dir + "/kos.db";
  if (f.url.starts_with("sqlite:")) return f.url.substr(7);
  if (f.url.starts_with("etcd:"))
    return fail(Errc::kUnsupported,
                std::string("an etcd store is ") + (std::string(verb) == "backup" ? "backed up" : "restored") +
                    " with etcd's own tool: ETCDCTL_API=3 etcdctl --endpoints " + f.url.substr(5) + " snapshot " +
                    (std::string(verb) == "backup" ? "save FILE" : "restore FILE --data-dir DIR") +
                    " (see the README, Operations)");
  return fail(Errc::kInvalid, "--store " + f.url + ": sqlite:PATH or etcd:URL");
}

}  // namespace

void add_store_commands(CLI::App& app, std::function<int()>& run) {
  auto flags = std::make_shared<StoreFlags>();
  auto* store = app.add_subcommand("store", "Inspect and maintain a KOS store (embedded or etcd)");
  store->require_subcommand(1);

  auto* rev = store->add_subcommand("revision", "Print the store's current revision");
  add_store_flag(rev, *flags);
  rev->callback([&run, flags] {
    run = [flags] {
      return with_store(*flags, [](store::Store& s) -> Result<void> {
        auto r = s.current_revision();
        if (!r) return fail(r.error());
        std::printf("%lld\n", static_cast<long long>(*r));
        return {};
      });
    };
  });

  auto* get = store->add_subcommand("get", "Print one key with its revisions and value");
  add_store_flag(get, *flags);
  get->add_option("key", flags->key, "the key")->required();
  get->add_option("--revision", flags->revision, "read at this revision (0 = latest)");
  get->callback([&run, flags] {
    run = [flags] {
      return with_store(*flags, [flags](store::Store& s) -> Result<void> {
        auto kv = s.get(flags->key, flags->revision);
        if (!kv) return fail(kv.error());
        print_kv(*kv, false);
        return {};
      });
    };
  });

  auto* list = store->add_subcommand("list", "List the keys under a prefix");
  add_store_flag(list, *flags);
  list->add_option("prefix", flags->key, "key prefix (default: everything)");
  list->add_option("--revision", flags->revision, "read at this revision (0 = latest)");
  list->add_option("--limit", flags->limit, "at most this many keys (0 = all)");
  list->add_flag("--keys-only", flags->keys_only, "print keys and revisions, not values");
  list->callback([&run, flags] {
    run = [flags] {
      return with_store(*flags, [flags](store::Store& s) -> Result<void> {
        auto l = s.list(flags->key, {.revision = flags->revision, .limit = flags->limit});
        if (!l) return fail(l.error());
        for (auto& kv : l->items) print_kv(kv, flags->keys_only);
        std::fprintf(stderr, "%zu keys at revision %lld%s\n", l->items.size(),
                     static_cast<long long>(l->revision), l->more ? " (more follow)" : "");
        return {};
      });
    };
  });

  auto* backup = store->add_subcommand(
      "backup", "Copy the embedded store to FILE, consistently, while a server runs (SQLite's online backup)");
  backup->add_option("file", flags->file, "the new file to write")->required();
  auto* bstore = backup->add_option("--store", flags->url, "the store: sqlite:PATH");
  backup->add_option("--data-dir", flags->data_dir, "the store in DIR/kos.db")->capture_default_str()->excludes(bstore);
  backup->callback([&run, flags] {
    run = [flags] {
      auto path = sqlite_path(*flags, "backup");
      auto info = path ? store::backup_sqlite(*path, flags->file) : Result<store::BackupInfo>(fail(path.error()));
      if (!info) {
        std::fprintf(stderr, "kos store backup: %s\n", info.error().message.c_str());
        return 1;
      }
      std::printf("backed up %s to %s: revision %lld, %llu bytes\n", path->c_str(), flags->file.c_str(),
                  static_cast<long long>(info->revision), static_cast<unsigned long long>(info->bytes));
      return 0;
    };
  });

  auto* restore = store->add_subcommand(
      "restore", "Put a backup made by `kos store backup` in place of the embedded store of a stopped server");
  restore->add_option("file", flags->file, "the backup")->required();
  auto* rstore = restore->add_option("--store", flags->url, "the store: sqlite:PATH");
  restore->add_option("--data-dir", flags->data_dir, "the store in DIR/kos.db")->capture_default_str()->excludes(rstore);
  restore->add_flag("--force", flags->force, "replace a store that exists there");
  restore->callback([&run, flags] {
    run = [flags] {
      auto path = sqlite_path(*flags, "restore");
      auto info = path ? store::restore_sqlite(flags->file, *path, flags->force)
                       : Result<store::BackupInfo>(fail(path.error()));
      if (!info) {
        std::fprintf(stderr, "kos store restore: %s\n", info.error().message.c_str());
        return 1;
      }
      std::printf("restored %s into %s: revision %lld; start the server on it\n", flags->file.c_str(), path->c_str(),
                  static_cast<long long>(info->revision));
      return 0;
    };
  });

  auto* compact = store->add_subcommand("compact", "Discard history older than a revision");
  add_store_flag(compact, *flags);
  compact->add_option("revision", flags->revision, "compact up to this revision")->required();
  compact->callback([&run, flags] {
    run = [flags] {
      return with_store(*flags, [flags](store::Store& s) -> Result<void> {
        if (auto r = s.compact(flags->revision); !r) return r;
        std::printf("compacted up to revision %lld\n", static_cast<long long>(flags->revision));
        return {};
      });
    };
  });
}

}  // namespace kos::cmd
