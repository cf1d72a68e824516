#include "common/error.h"

#include <gtest/gtest.h>

namespace kos {
namespace {

TEST(Error, MapsEveryCodeToHttpStatusAndReason) {
  struct Row { Errc code; int status; std::string_view reason; };
  const Row rows[] = {
      {Errc::kNotFound, 404, "NotFound"},       {Errc::kAlreadyExists, 409, "AlreadyExists"},
      {Errc::kConflict, 409, "Conflict"},       {Errc::kInvalid, 422, "Invalid"},
      {Errc::kBadRequest, 400, "BadRequest"},   {Errc::kCompacted, 410, "Expired"},
      {Errc::kUnavailable, 503, "ServiceUnavailable"}, {Errc::kTimeout, 504, "Timeout"},
      {Errc::kUnsupported, 415, "UnsupportedMediaType"}, {Errc::kInternal, 500, "InternalError"},
  };
  for (const auto& r : rows) {
    Error e{r.code, "m", {}};
    EXPECT_EQ(e.http_status(), r.status) << errc_name(r.code);
    EXPECT_EQ(e.reason(), r.reason) << errc_name(r.code);
  }
}

TEST(Error, ToStringListsCauses) {
  Error e{Errc::kInvalid, "Subnet \"s1\" is invalid",
          {{"FieldValueInvalid", "must be 1..2097151", "spec.vni"}}};
  EXPECT_EQ(e.to_string(), "Subnet \"s1\" is invalid; spec.vni: must be 1..2097151");
}

TEST(Error, FailBuildsUnexpected) {
  Result<int> r = fail(Errc::kNotFound, "nope");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, Errc::kNotFound);
  EXPECT_EQ(r.error().message, "nope");
}

}  // namespace
}  // namespace kos
