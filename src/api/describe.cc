#include "api/describe.h"

#include <array>

namespace kos::api {
namespace {

template <std::size_t... I>
const KindDescBase& describe_at(Kind kind, std::index_sequence<I...>) {
  static const std::array<const KindDescBase*, sizeof...(I)> table{
      &describe<std::variant_alternative_t<I, AnyObject>>()...};
  return *table[static_cast<std::size_t>(kind)];
}

}  // namespace

const KindDescBase& describe(Kind kind) {
  return describe_at(kind, std::make_index_sequence<std::variant_size_v<AnyObject>>());
}

}  // namespace kos::api
