// The kind descriptions (describe.h) and what works from them.
#include "api/describe.h"

#include <gtest/gtest.h>

#include <set>

#include "api/json.h"
#include "api/selectors.h"
#include "api/validation.h"

namespace kos::api {
namespace {

// Every column of kind T has a cell and a type (a field column names a field that exists).
template <class T>
void expect_columns_bound() {
  for (const auto& c : describe<T>().columns) {
    EXPECT_TRUE(static_cast<bool>(c.cell)) << kind_info(T::kKind).name << " column " << c.name << " (" << c.field << ")";
    EXPECT_FALSE(c.type.empty()) << kind_info(T::kKind).name << " column " << c.name;
  }
}

void expect_unique_names(const StructInfo& s) {
  std::set<std::string_view> seen;
  for (const FieldInfo* f : s.fields) {
    EXPECT_TRUE(seen.insert(f->name).second) << s.name << " has two fields named " << f->name;
    EXPECT_FALSE(f->description.empty()) << s.name << "." << f->name << " is undocumented";
    if (f->nested) expect_unique_names(*f->nested);
  }
}

TEST(Describe, EveryKindIsDescribedCompletely) {
  for (const auto& k : all_kinds()) {
    const KindDescBase& d = describe(k.kind);
    EXPECT_EQ(d.kind, k.kind);
    EXPECT_FALSE(d.description.empty()) << k.name;
    ASSERT_NE(d.spec, nullptr) << k.name;
    EXPECT_EQ(d.status != nullptr, k.has_status) << k.name;
    expect_unique_names(*d.spec);
    if (d.status) expect_unique_names(*d.status);
    ASSERT_FALSE(d.sections.empty()) << k.name;
    EXPECT_EQ(d.sections.front(), section::kSpec) << k.name;
    // Every selectable field has a value on an object of the kind, and the watch cache's
    // indexes are selectable fields.
    const AnyObject zero = make_object(k.kind);
    for (const auto& f : d.selectable) EXPECT_TRUE(field_value(zero, f).has_value()) << k.name << " " << f;
    for (auto f : d.indexed_fields)
      EXPECT_NE(std::ranges::find(d.selectable, std::string(f)), d.selectable.end()) << k.name << " indexes " << f;
    EXPECT_FALSE(field_value(zero, "spec.nope").has_value());
    std::visit([](const auto& x) { expect_columns_bound<std::decay_t<decltype(x)>>(); }, zero);
  }
}

Vpc sample_vpc() {
  Vpc v;
  v.metadata.name = "a";
  v.metadata.namespace_ = "ns";
  v.spec.vni = 100;
  v.spec.cidr_blocks = {"10.0.0.0/8", "192.168.0.0/16"};
  v.status.validated = true;
  v.status.subnet_count = 2;
  return v;
}

TEST(Describe, AVpcRoundTripsValidatesAndSelects) {
  const Vpc v = sample_vpc();
  const std::string text = encode(v);
  EXPECT_EQ(text,
            R"({"kind":"Vpc","apiVersion":"network.example.com/v1alpha1","metadata":{"name":"a","namespace":"ns"},)"
            R"("spec":{"vni":100,"cidrBlocks":["10.0.0.0/8","192.168.0.0/16"]},"status":{"validated":true,"subnetCount":2}})");
  auto back = decode<Vpc>(text);
  ASSERT_TRUE(back.has_value()) << back.error().message;
  EXPECT_EQ(*back, v);
  EXPECT_TRUE(validate(AnyObject(v)).has_value());
  EXPECT_EQ(field_value(v, "spec.vni"), "100");

  Vpc bad = v;
  bad.spec.vni = 0;
  bad.spec.cidr_blocks = {"10.0.0.1/8", "", "8.8.8.0/24"};
  auto e = validate(AnyObject(bad));
  ASSERT_FALSE(e.has_value());
  std::vector<std::string> fields;
  for (const auto& c : e.error().causes) fields.push_back(c.field);
  EXPECT_EQ(fields, (std::vector<std::string>{"spec.vni", "spec.cidrBlocks[0]", "spec.cidrBlocks[1]",
                                              "spec.cidrBlocks[2]"}))
      << e.error().message;

  Vpc moved = v;
  moved.spec.vni = 101;
  moved.spec.cidr_blocks = {"10.0.0.0/8"};
  auto u = validate_update(AnyObject(v), AnyObject(moved));
  ASSERT_FALSE(u.has_value());
  EXPECT_NE(u.error().message.find("spec.vni: Invalid value: 101: field is immutable"), std::string::npos)
      << u.error().message;
  EXPECT_NE(u.error().message.find("spec.cidrBlocks: Invalid value: [\"10.0.0.0/8\"]: field is immutable"),
            std::string::npos)
      << u.error().message;

  auto unknown = decode<Vpc>(R"({"spec":{"vni":1,"cidrblocks":[]}})", DecodeOptions{.strict = true});
  ASSERT_FALSE(unknown.has_value());
  EXPECT_NE(unknown.error().message.find("unknown field \"spec.cidrblocks\""), std::string::npos)
      << unknown.error().message;
}

TEST(Describe, ASubnetOfAVpcNeedsRoomForItsGateway) {
  Subnet s;
  s.metadata.name = "s";
  s.metadata.namespace_ = "ns";
  s.spec.vni = 5;
  s.spec.ipv4 = "10.1.0.0/30";
  EXPECT_TRUE(validate_subnet(s).has_value()) << "an isolated /30 is fine";
  s.spec.vpc = "a";
  auto e = validate_subnet(s);
  ASSERT_FALSE(e.has_value());
  EXPECT_NE(e.error().message.find("a subnet of a VPC needs room for a gateway: a /29 or larger"), std::string::npos);
  s.spec.ipv4 = "10.1.0.0/29";
  EXPECT_TRUE(validate_subnet(s).has_value());
  s.spec.vpc = "Not_A_Name";
  EXPECT_FALSE(validate_subnet(s).has_value());
}

}  // namespace
}  // namespace kos::api
