#include "api/selectors.h"

#include <random>

#include <gtest/gtest.h>

namespace kos::api {
namespace {

using Labels = std::map<std::string, std::string>;

TEST(LabelSelector, ParsesToCanonicalForm) {
  struct Row {
    std::string_view text, canonical;
  };
  const Row rows[] = {
      {"", ""},
      {"   ", ""},
      {"a=b", "a=b"},
      {"a==b", "a=b"},
      {"a!=b", "a!=b"},
      {"a=", "a="},
      {"a", "a"},
      {"!a", "!a"},
      {"a in (b,c)", "a in (b,c)"},
      {"a notin (b)", "a notin (b)"},
      {"  a  =  b ,  ! c , d in ( x , y ) ,e notin(z)", "a=b,!c,d in (x,y),e notin (z)"},
      {"example.com/app=web,tier!=db", "example.com/app=web,tier!=db"},
      {"in=x,notin in (in)", "in=x,notin in (in)"},  // keywords only where an operator goes
      {"a in (b,)", "a in (b,)"},                    // an empty value, as in `a=`
      {"a in (,,c)", "a in (,,c)"},                  // leading empty values too (found by fuzzing)
  };
  for (const auto& r : rows) {
    auto s = LabelSelector::parse(r.text);
    ASSERT_TRUE(s.has_value()) << r.text << ": " << s.error().message;
    EXPECT_EQ(s->to_string(), r.canonical) << r.text;
    auto again = LabelSelector::parse(s->to_string());
    ASSERT_TRUE(again.has_value());
    EXPECT_EQ(*again, *s) << r.text;
  }
}

TEST(LabelSelector, Matches) {
  struct Row {
    std::string_view selector;
    Labels labels;
    bool want;
  };
  const Labels web{{"app", "web"}, {"tier", "front"}};
  const Row rows[] = {
      {"", {}, true},
      {"", web, true},
      {"app=web", web, true},
      {"app==web", web, true},
      {"app=db", web, false},
      {"app=web,tier=front", web, true},
      {"app=web,tier=back", web, false},
      {"app!=db", web, true},
      {"app!=web", web, false},
      {"zone!=x", web, true},  // absent label: != matches
      {"app in (db,web)", web, true},
      {"app in (db)", web, false},
      {"zone in (a)", web, false},
      {"app notin (db)", web, true},
      {"app notin (web)", web, false},
      {"zone notin (a)", web, true},  // absent label: notin matches
      {"app", web, true},
      {"zone", web, false},
      {"!zone", web, true},
      {"!app", web, false},
      {"empty=", {{"empty", ""}}, true},
      {"empty=", {}, false},
      {"empty!=", {}, true},
  };
  for (const auto& r : rows) {
    auto s = LabelSelector::parse(r.selector);
    ASSERT_TRUE(s.has_value()) << r.selector;
    EXPECT_EQ(s->matches(r.labels), r.want) << r.selector;
  }
}

TEST(LabelSelector, RejectsMalformed) {
  struct Row {
    std::string text;
    std::string_view message;  // a substring
  };
  const Row rows[] = {
      {",", "at position 0: expected a label key, found \",\""},
      {"a=b,", "at position 4: expected a label key, found the end"},
      {"a=b,,c", "at position 4: expected a label key"},
      {"!", "at position 1: expected a label key, found the end"},
      {"!!a", "expected a label key"},
      {"!a=b", "at position 2: expected ',' or the end, found \"=\""},
      {"a b", "at position 2: expected an operator (=, ==, !=, in, notin), found \"b\""},
      {"a=b c", "at position 4: expected ',' or the end, found \"c\""},
      {"a=b=c", "at position 3: expected ',' or the end"},
      {"a===b", "expected a label value, found \"=\""},
      {"a in", "expected '(', found the end"},
      {"a in b", "expected '(', found \"b\""},
      {"a in ()", "expected a value, found \")\""},
      {"a in (b", "expected ',' or ')', found the end"},
      {"a in (b c)", "expected ',' or ')', found \"c\""},
      {"a in ((b))", "expected a label value, found \"(\""},
      {"a notin", "expected '('"},
      {"(a)", "expected a label key, found \"(\""},
      {"a)", "expected an operator"},
      {"a!", "expected an operator"},
      {"-a=b", "invalid label key: name part"},
      {"a/b/c", "invalid label key"},
      {"Example.com/a", "invalid label key: prefix part"},
      {std::string(64, 'k'), "invalid label key: name part must be no more than 63"},
      {"a=-b", "invalid label value"},
      {"a in (b,-c)", "invalid label value"},
      {"a=" + std::string(64, 'v'), "invalid label value: must be no more than 63"},
      {"a=b;c", "invalid label value"},
  };
  for (const auto& r : rows) {
    auto s = LabelSelector::parse(r.text);
    ASSERT_FALSE(s.has_value()) << "accepted: " << r.text;
    EXPECT_EQ(s.error().code, Errc::kBadRequest);
    EXPECT_TRUE(s.error().message.starts_with("invalid label selector \"")) << s.error().message;
    EXPECT_NE(s.error().message.find(r.message), std::string::npos)
        << r.text << " -> " << s.error().message;
  }
}

TEST(FieldSelector, Parses) {
  struct Row {
    std::string_view text;
    std::vector<FieldRequirement> want;
    std::string_view canonical;
  };
  const Row rows[] = {
      {"", {}, ""},
      {"spec.node=n1", {{"spec.node", true, "n1"}}, "spec.node=n1"},
      {"spec.node==n1", {{"spec.node", true, "n1"}}, "spec.node=n1"},
      {"spec.node!=n1", {{"spec.node", false, "n1"}}, "spec.node!=n1"},
      {"status.ipv4!=", {{"status.ipv4", false, ""}}, "status.ipv4!="},
      {" spec.node = n1 , status.ipv4 != ",
       {{"spec.node", true, "n1"}, {"status.ipv4", false, ""}},
       "spec.node=n1,status.ipv4!="},
      {"metadata.name=a\\,b\\=c\\!d\\\\e",
       {{"metadata.name", true, "a,b=c!d\\e"}},
       "metadata.name=a\\,b\\=c\\!d\\\\e"},
      {"a=b,,c=d,", {{"a", true, "b"}, {"c", true, "d"}}, "a=b,c=d"},  // as Kubernetes
  };
  for (const auto& r : rows) {
    auto s = FieldSelector::parse(r.text);
    ASSERT_TRUE(s.has_value()) << r.text << ": " << s.error().message;
    EXPECT_EQ(s->requirements(), r.want) << r.text;
    EXPECT_EQ(s->to_string(), r.canonical) << r.text;
    EXPECT_EQ(*FieldSelector::parse(s->to_string()), *s) << r.text;
  }
}

TEST(FieldSelector, RejectsMalformed) {
  struct Row {
    std::string_view text, message;
  };
  const Row rows[] = {
      {"spec.node", "term \"spec.node\" is not field=value, field==value or field!=value"},
      {"a=b,spec.node", "term \"spec.node\" is not"},
      {"=x", "has no field"},
      {" != x", "has no field"},
      {"a! =b", "invalid field name \"a!\""},
      {"spec node=b", "invalid field name \"spec node\""},
      {"a\\,b=c", "invalid field name"},
      {"a=b=c", "unescaped '=' in value \"b=c\"; write it as \\="},
      {"a=!b", "unescaped '!'"},
      {"a===b", "unescaped '='"},
      {"a=b\\", "invalid escape sequence"},
      {"a=b\\x", "invalid escape sequence"},
  };
  for (const auto& r : rows) {
    auto s = FieldSelector::parse(r.text);
    ASSERT_FALSE(s.has_value()) << "accepted: " << r.text;
    EXPECT_EQ(s.error().code, Errc::kBadRequest);
    EXPECT_TRUE(s.error().message.starts_with("invalid field selector \"")) << s.error().message;
    EXPECT_NE(s.error().message.find(r.message), std::string::npos)
        << r.text << " -> " << s.error().message;
  }
}

NetworkAttachment sample_na() {
  NetworkAttachment na;
  na.metadata.name = "na1";
  na.metadata.namespace_ = "ns1";
  na.spec.node = "node-1";
  na.spec.subnet = "s1";
  na.status.ipv4 = "10.1.2.3";
  na.status.host_ip = "192.168.0.7";
  na.status.address_vni = 42;
  return na;
}

TEST(FieldSelector, FieldValuesPerKind) {
  const NetworkAttachment na = sample_na();
  Subnet sn;
  sn.metadata.name = "s1";
  sn.spec.vni = 7;
  IPLock lock;
  lock.metadata.namespace_ = "ns2";
  lock.spec.subnet_name = "s1";
  struct Row {
    AnyObject obj;
    std::string_view field;
    std::optional<std::string> want;
  };
  const Row rows[] = {
      {na, "metadata.name", "na1"},
      {na, "metadata.namespace", "ns1"},
      {na, "spec.node", "node-1"},
      {na, "spec.subnet", "s1"},
      {na, "status.ipv4", "10.1.2.3"},
      {na, "status.hostIP", "192.168.0.7"},
      {na, "status.addressVNI", "42"},
      {na, "spec.vni", std::nullopt},
      {na, "status.macAddress", std::nullopt},
      {sn, "spec.vni", "7"},
      {sn, "metadata.name", "s1"},
      {sn, "spec.node", std::nullopt},
      {lock, "spec.subnetName", "s1"},
      {lock, "metadata.namespace", "ns2"},
      {lock, "metadata.uid", std::nullopt},
      {Subnet{}, "spec.vni", "0"},
      {NetworkAttachment{}, "status.addressVNI", "0"},
  };
  for (const auto& r : rows) {
    EXPECT_EQ(field_value(r.obj, r.field), r.want)
        << kind_info(kind_of(r.obj)).name << " " << r.field;
  }
  // Every advertised field has a value.
  for (const auto& k : all_kinds()) {
    for (auto f : selectable_fields(k.kind)) {
      EXPECT_TRUE(field_value(make_object(k.kind), f).has_value()) << k.name << " " << f;
    }
  }
}

TEST(FieldSelector, Matches) {
  const AnyObject na = sample_na();
  struct Row {
    std::string_view selector;
    bool want;
  };
  const Row rows[] = {
      {"", true},
      {"spec.node=node-1", true},
      {"spec.node=node-2", false},
      {"spec.node!=node-2", true},
      {"spec.node=node-1,status.ipv4!=", true},
      {"spec.node=node-1,status.ipv4=", false},
      {"status.addressVNI=42,spec.node!=node-1", false},
      {"metadata.name=na1,metadata.namespace=ns1", true},
  };
  for (const auto& r : rows) {
    auto s = FieldSelector::parse(r.selector);
    ASSERT_TRUE(s.has_value()) << r.selector;
    EXPECT_EQ(s->matches(na), r.want) << r.selector;
  }
  // A list field: "=" selects the lists that hold the value, "!=" those that do not.
  NetworkAttachment member = std::get<NetworkAttachment>(na);
  member.spec.security_groups = {"web", "db"};
  for (const auto& [sel, want] : std::vector<std::pair<std::string, bool>>{
           {"spec.securityGroups=web", true},
           {"spec.securityGroups=db", true},
           {"spec.securityGroups=we", false},
           {"spec.securityGroups=web;db", false},
           {"spec.securityGroups!=web", false},
           {"spec.securityGroups!=ssh", true},
           {"spec.securityGroups=", false},
       }) {
    EXPECT_EQ(FieldSelector::parse(sel)->matches(AnyObject(member)), want) << sel;
  }
  EXPECT_TRUE(FieldSelector::parse("spec.securityGroups=")->matches(na));
  EXPECT_FALSE(FieldSelector::parse("spec.securityGroups=web")->matches(na));
  // An unaddressed NA: the agent's "status.ipv4!=" excludes it.
  EXPECT_FALSE(FieldSelector::parse("status.ipv4!=")->matches(AnyObject(NetworkAttachment{})));
  // A custom getter; a field without a value reads as "".
  auto s = *FieldSelector::parse("x=1,y!=2,z=");
  EXPECT_TRUE(s.matches([](std::string_view f) -> std::optional<std::string> {
    if (f == "x") return "1";
    return std::nullopt;
  }));
}

TEST(FieldSelector, ExactValue) {
  auto s = *FieldSelector::parse("spec.node=n1,status.addressVNI!=0,spec.subnet==s1");
  EXPECT_EQ(s.exact_value("spec.node"), "n1");
  EXPECT_EQ(s.exact_value("spec.subnet"), "s1");
  EXPECT_EQ(s.exact_value("status.addressVNI"), std::nullopt);  // != does not pin
  EXPECT_EQ(s.exact_value("metadata.name"), std::nullopt);
  EXPECT_EQ(FieldSelector::parse("status.ipv4=")->exact_value("status.ipv4"), "");
}

TEST(FieldSelector, CheckFieldsPerKind) {
  struct Row {
    Kind kind;
    std::string_view selector;
    std::string_view error;  // empty: accepted
  };
  const Row rows[] = {
      {Kind::kNetworkAttachment,
       "spec.node=a,spec.subnet=b,status.ipv4=c,status.hostIP=d,status.addressVNI=1,"
       "metadata.name=x,metadata.namespace=y",
       ""},
      {Kind::kSubnet, "spec.vni=5,metadata.name=x,metadata.namespace=y", ""},
      {Kind::kIPLock, "spec.subnetName=s,metadata.name=x,metadata.namespace=y", ""},
      {Kind::kSubnet, "", ""},
      {Kind::kSubnet, "spec.node=a", "field label not supported: spec.node"},
      {Kind::kNetworkAttachment, "spec.node=a,spec.foo=b", "field label not supported: spec.foo"},
      {Kind::kNetworkAttachment, "spec.vni=5", "field label not supported: spec.vni"},
      {Kind::kIPLock, "spec.subnet=s", "field label not supported: spec.subnet"},
      {Kind::kIPLock, "metadata.uid=u", "field label not supported: metadata.uid"},
      {Kind::kSubnet, "Spec.vni=5", "field label not supported: Spec.vni"},
  };
  for (const auto& r : rows) {
    auto s = FieldSelector::parse(r.selector);
    ASSERT_TRUE(s.has_value()) << r.selector;
    auto ok = check_fields(*s, r.kind);
    if (r.error.empty()) {
      EXPECT_TRUE(ok.has_value()) << r.selector << ": " << ok.error().message;
    } else {
      ASSERT_FALSE(ok.has_value()) << r.selector;
      EXPECT_EQ(ok.error().code, Errc::kBadRequest);
      EXPECT_EQ(ok.error().message, r.error);
    }
  }
}

TEST(Selectors, RandomTextParsesCleanlyOrFailsCleanly) {
  // Whatever parses must print back to an equivalent selector.
  constexpr std::string_view kChars = "ab=!,() \\in notin.-/";
  std::mt19937 rng(2);
  int parsed = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string text;
    for (std::size_t n = rng() % 14; n > 0; --n) text += kChars[rng() % kChars.size()];
    if (auto l = LabelSelector::parse(text)) {
      ++parsed;
      auto again = LabelSelector::parse(l->to_string());
      ASSERT_TRUE(again.has_value()) << text << " -> " << l->to_string();
      EXPECT_EQ(*again, *l) << text;
    } else {
      ASSERT_EQ(l.error().code, Errc::kBadRequest);
    }
    if (auto f = FieldSelector::parse(text)) {
      ++parsed;
      auto again = FieldSelector::parse(f->to_string());
      ASSERT_TRUE(again.has_value()) << text << " -> " << f->to_string();
      EXPECT_EQ(*again, *f) << text;
    } else {
      ASSERT_EQ(f.error().code, Errc::kBadRequest);
    }
  }
  EXPECT_GT(parsed, 1000);
}

}  // namespace
}  // namespace kos::api
