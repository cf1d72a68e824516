#include "apiserver/table.h"

namespace kos::apiserver {
namespace json = boost::json;

json::array table_columns(const Strategy& s) {
  json::array cols;
  for (const auto& c : s.columns()) {
    json::object col;
    col["name"] = c.name;
    col["type"] = c.type;
    col["format"] = c.format;
    col["description"] = c.description;
    col["priority"] = c.priority;
    cols.push_back(std::move(col));
  }
  return cols;
}

json::object table_row(const Strategy& s, const json::object& obj,
                       std::chrono::system_clock::time_point now, TableObjects include) {
  json::object row;
  row["cells"] = s.cells(obj, now);
  if (include == TableObjects::kObject) {
    row["object"] = obj;
  } else if (include == TableObjects::kMetadata) {
    json::object partial;
    partial["kind"] = "PartialObjectMetadata";
    partial["apiVersion"] = "meta.k8s.io/v1";
    if (const auto* m = obj.if_contains("metadata")) partial["metadata"] = *m;
    row["object"] = std::move(partial);
  }
  return row;
}

json::object make_table(const Strategy& s, json::array rows, json::object list_meta) {
  json::object t;
  t["kind"] = "Table";
  t["apiVersion"] = "meta.k8s.io/v1";
  t["metadata"] = std::move(list_meta);
  t["columnDefinitions"] = table_columns(s);
  t["rows"] = std::move(rows);
  return t;
}

}  // namespace kos::apiserver
