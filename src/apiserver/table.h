// meta.k8s.io/v1 Table output (what `kubectl get` asks for), for lists and watch events.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include <boost/json/object.hpp>

#include "apiserver/resource.h"

namespace kos::apiserver {

enum class TableObjects { kNone, kMetadata, kObject };  // ?includeObject=None|Metadata|Object

boost::json::array table_columns(const Strategy& s);
boost::json::object table_row(const Strategy& s, const boost::json::object& obj,
                              std::chrono::system_clock::time_point now, TableObjects include);
// A Table with `rows` and the given list metadata.
boost::json::object make_table(const Strategy& s, boost::json::array rows,
                               boost::json::object list_meta);

}  // namespace kos::apiserver
