#include "apiserver/patch.h"

#include <string>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <gtest/gtest.h>

namespace kos::apiserver {
namespace {

namespace json = boost::json;

json::value J(std::string_view text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  EXPECT_FALSE(ec) << "bad test JSON: " << text;
  return v;
}

struct Case {
  const char* name;
  const char* target;
  const char* patch;
  const char* result;  // nullptr: the patch must fail
};

// RFC 7386 Appendix A.
TEST(MergePatch, Rfc7386AppendixA) {
  const Case cases[] = {
      {"1", R"({"a":"b"})", R"({"a":"c"})", R"({"a":"c"})"},
      {"2", R"({"a":"b"})", R"({"b":"c"})", R"({"a":"b","b":"c"})"},
      {"3", R"({"a":"b"})", R"({"a":null})", R"({})"},
      {"4", R"({"a":"b","b":"c"})", R"({"a":null})", R"({"b":"c"})"},
      {"5", R"({"a":["b"]})", R"({"a":"c"})", R"({"a":"c"})"},
      {"6", R"({"a":"c"})", R"({"a":["b"]})", R"({"a":["b"]})"},
      {"7", R"({"a":{"b":"c"}})", R"({"a":{"b":"d","c":null}})", R"({"a":{"b":"d"}})"},
      {"8", R"({"a":[{"b":"c"}]})", R"({"a":[1]})", R"({"a":[1]})"},
      {"9", R"(["a","b"])", R"(["c","d"])", R"(["c","d"])"},
      {"10", R"({"a":"b"})", R"(["c"])", R"(["c"])"},
      {"11", R"({"a":"foo"})", R"(null)", R"(null)"},
      {"12", R"({"a":"foo"})", R"("bar")", R"("bar")"},
      {"13", R"({"e":null})", R"({"a":1})", R"({"e":null,"a":1})"},
      {"14", R"([1,2])", R"({"a":"b","c":null})", R"({"a":"b"})"},
      {"15", R"({})", R"({"a":{"bb":{"ccc":null}}})", R"({"a":{"bb":{}}})"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    auto r = apply_merge_patch(J(c.target), J(c.patch));
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(*r, J(c.result)) << json::serialize(*r);
  }
}

TEST(MergePatch, KeepsMemberOrderAndTarget) {
  const json::value target = J(R"({"a":1,"b":2,"c":{"d":3,"e":4}})");
  auto r = apply_merge_patch(target, J(R"({"a":null,"c":{"d":null,"f":5}})"));
  ASSERT_TRUE(r);
  EXPECT_EQ(json::serialize(*r), R"({"b":2,"c":{"e":4,"f":5}})");
  EXPECT_EQ(target, J(R"({"a":1,"b":2,"c":{"d":3,"e":4}})"));
}

TEST(MergePatch, TooDeepIsBadRequest) {
  std::string deep;
  for (int i = 0; i < 70; ++i) deep += R"({"a":)";
  deep += "1";
  for (int i = 0; i < 70; ++i) deep += "}";
  json::parse_options opts;
  opts.max_depth = 100;
  boost::system::error_code ec;
  json::value patch = json::parse(deep, ec, {}, opts);
  ASSERT_FALSE(ec);
  auto r = apply_merge_patch(json::object(), patch);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kBadRequest);
}

// RFC 6902 Appendix A (A.13's duplicate "op" parses as its last value, "remove", which
// then fails: there is no /baz).
TEST(JsonPatch, Rfc6902AppendixA) {
  const Case cases[] = {
      {"A.1", R"({"foo":"bar"})", R"([{"op":"add","path":"/baz","value":"qux"}])",
       R"({"baz":"qux","foo":"bar"})"},
      {"A.2", R"({"foo":["bar","baz"]})", R"([{"op":"add","path":"/foo/1","value":"qux"}])",
       R"({"foo":["bar","qux","baz"]})"},
      {"A.3", R"({"baz":"qux","foo":"bar"})", R"([{"op":"remove","path":"/baz"}])",
       R"({"foo":"bar"})"},
      {"A.4", R"({"foo":["bar","qux","baz"]})", R"([{"op":"remove","path":"/foo/1"}])",
       R"({"foo":["bar","baz"]})"},
      {"A.5", R"({"baz":"qux","foo":"bar"})",
       R"([{"op":"replace","path":"/baz","value":"boo"}])", R"({"baz":"boo","foo":"bar"})"},
      {"A.6", R"({"foo":{"bar":"baz","waldo":"fred"},"qux":{"corge":"grault"}})",
       R"([{"op":"move","from":"/foo/waldo","path":"/qux/thud"}])",
       R"({"foo":{"bar":"baz"},"qux":{"corge":"grault","thud":"fred"}})"},
      {"A.7", R"({"foo":["all","grass","cows","eat"]})",
       R"([{"op":"move","from":"/foo/1","path":"/foo/3"}])",
       R"({"foo":["all","cows","eat","grass"]})"},
      {"A.8", R"({"baz":"qux","foo":["a",2,"c"]})",
       R"([{"op":"test","path":"/baz","value":"qux"},{"op":"test","path":"/foo/1","value":2}])",
       R"({"baz":"qux","foo":["a",2,"c"]})"},
      {"A.9", R"({"baz":"qux"})", R"([{"op":"test","path":"/baz","value":"bar"}])", nullptr},
      {"A.10", R"({"foo":"bar"})", R"([{"op":"add","path":"/child","value":{"grandchild":{}}}])",
       R"({"foo":"bar","child":{"grandchild":{}}})"},
      {"A.11", R"({"foo":"bar"})", R"([{"op":"add","path":"/baz","value":"qux","xyz":123}])",
       R"({"foo":"bar","baz":"qux"})"},
      {"A.12", R"({"foo":"bar"})", R"([{"op":"add","path":"/baz/bat","value":"qux"}])", nullptr},
      {"A.13", R"({"foo":"bar"})",
       R"([{"op":"add","path":"/baz","value":"qux","op":"remove"}])", nullptr},
      {"A.14", R"({"/":9,"~1":10})", R"([{"op":"test","path":"/~01","value":10}])",
       R"({"/":9,"~1":10})"},
      {"A.15", R"({"/":9,"~1":10})", R"([{"op":"test","path":"/~01","value":"10"}])", nullptr},
      {"A.16", R"({"foo":["bar"]})", R"([{"op":"add","path":"/foo/-","value":["abc","def"]}])",
       R"({"foo":["bar",["abc","def"]]})"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    auto r = apply_json_patch(J(c.target), J(c.patch));
    if (c.result) {
      ASSERT_TRUE(r) << r.error().message;
      EXPECT_EQ(*r, J(c.result)) << json::serialize(*r);
    } else {
      ASSERT_FALSE(r) << json::serialize(*r);
      EXPECT_EQ(r.error().code, Errc::kInvalid) << r.error().message;
    }
  }
}

TEST(JsonPatch, MoreOperations) {
  const Case cases[] = {
      {"add replaces member", R"({"a":1})", R"([{"op":"add","path":"/a","value":2}])",
       R"({"a":2})"},
      {"add root", R"({"a":1})", R"([{"op":"add","path":"","value":[1]}])", "[1]"},
      {"add at end index", "[1]", R"([{"op":"add","path":"/1","value":2}])", "[1,2]"},
      {"add at 0", "[1]", R"([{"op":"add","path":"/0","value":0}])", "[0,1]"},
      {"empty key", R"({"":1})", R"([{"op":"replace","path":"/","value":2}])", R"({"":2})"},
      {"replace root", R"({"a":1})", R"([{"op":"replace","path":"","value":3}])", "3"},
      {"copy", R"({"a":{"b":[1]}})", R"([{"op":"copy","from":"/a/b","path":"/a/c"}])",
       R"({"a":{"b":[1],"c":[1]}})"},
      {"copy into array end", R"({"a":[1,2]})", R"([{"op":"copy","from":"/a/0","path":"/a/-"}])",
       R"({"a":[1,2,1]})"},
      {"copy into own child", R"({"a":{"b":1}})", R"([{"op":"copy","from":"/a","path":"/a/c"}])",
       R"({"a":{"b":1,"c":{"b":1}}})"},
      {"move to same place", R"({"a":1,"b":2})", R"([{"op":"move","from":"/a","path":"/a"}])",
       R"({"a":1,"b":2})"},
      {"move to parent", R"({"a":{"b":1}})", R"([{"op":"move","from":"/a/b","path":"/a"}])",
       R"({"a":1})"},
      {"escapes", R"({"a/b":{"m~n":1}})", R"([{"op":"remove","path":"/a~1b/m~0n"}])",
       R"({"a/b":{}})"},
      {"test number by value", R"({"a":1,"b":[1.0]})",
       R"([{"op":"test","path":"/a","value":1.0},{"op":"test","path":"/b","value":[1]}])",
       R"({"a":1,"b":[1.0]})"},
      {"test object any order", R"({"a":{"x":1,"y":[true,null]}})",
       R"([{"op":"test","path":"/a","value":{"y":[true,null],"x":1}}])",
       R"({"a":{"x":1,"y":[true,null]}})"},
      {"test root", R"({"a":1})", R"([{"op":"test","path":"","value":{"a":1}}])", R"({"a":1})"},
      {"ops see earlier ops", R"({})",
       R"([{"op":"add","path":"/a","value":{}},{"op":"add","path":"/a/b","value":1}])",
       R"({"a":{"b":1}})"},
      {"empty patch", R"({"a":1})", "[]", R"({"a":1})"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    auto r = apply_json_patch(J(c.target), J(c.patch));
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(*r, J(c.result)) << json::serialize(*r);
  }
}

struct BadCase {
  const char* name;
  const char* target;
  const char* patch;
  Errc code;
  const char* message;
};

TEST(JsonPatch, BadPatches) {
  const BadCase cases[] = {
      // Malformed documents.
      {"not an array", "{}", R"({"op":"add"})", Errc::kBadRequest,
       "json patch must be an array of operations"},
      {"op not object", "{}", "[1]", Errc::kBadRequest, "json patch operation 0: not an object"},
      {"op missing", "{}", R"([{"path":"/a"}])", Errc::kBadRequest,
       R"(json patch operation 0: missing "op")"},
      {"op not string", "{}", R"([{"op":1,"path":"/a"}])", Errc::kBadRequest,
       R"(json patch operation 0: "op" must be a string)"},
      {"op unknown", "{}", R"([{"op":"delete","path":"/a"}])", Errc::kBadRequest,
       R"(json patch operation 0: unknown op "delete")"},
      {"path missing", "{}", R"([{"op":"remove"}])", Errc::kBadRequest,
       R"(json patch operation 0: missing "path")"},
      {"path not string", "{}", R"([{"op":"remove","path":["a"]}])", Errc::kBadRequest,
       R"(json patch operation 0: "path" must be a string)"},
      {"path no slash", "{}", R"([{"op":"remove","path":"a"}])", Errc::kBadRequest,
       R"(json patch operation 0: "path": pointer "a" must start with "/")"},
      {"bad escape", "{}", R"([{"op":"remove","path":"/a~2"}])", Errc::kBadRequest,
       R"(json patch operation 0: "path": pointer "/a~2" has a "~" not followed by 0 or 1)"},
      {"trailing tilde", "{}", R"([{"op":"remove","path":"/a~"}])", Errc::kBadRequest,
       R"(json patch operation 0: "path": pointer "/a~" has a "~" not followed by 0 or 1)"},
      {"value missing add", R"({"a":1})",
       R"([{"op":"test","path":"","value":{}},{"op":"remove","path":"/a"},)"
       R"({"op":"add","path":"/a"}])",
       Errc::kBadRequest, R"(json patch operation 2: missing "value")"},
      {"value missing replace", "{}", R"([{"op":"replace","path":"/a"}])", Errc::kBadRequest,
       R"(json patch operation 0: missing "value")"},
      {"value missing test", "{}", R"([{"op":"test","path":"/a"}])", Errc::kBadRequest,
       R"(json patch operation 0: missing "value")"},
      {"from missing move", "{}", R"([{"op":"move","path":"/a"}])", Errc::kBadRequest,
       R"(json patch operation 0: missing "from")"},
      {"from missing copy", "{}", R"([{"op":"copy","path":"/a"}])", Errc::kBadRequest,
       R"(json patch operation 0: missing "from")"},
      {"from not string", "{}", R"([{"op":"copy","path":"/a","from":null}])", Errc::kBadRequest,
       R"(json patch operation 0: "from" must be a string)"},
      // Operations that do not apply.
      {"test failed", R"({"spec":{"vni":1}})", R"([{"op":"test","path":"/spec/vni","value":2}])",
       Errc::kInvalid, "json patch operation 0: test failed at /spec/vni"},
      {"test missing", R"({})", R"([{"op":"test","path":"/a","value":null}])", Errc::kInvalid,
       "json patch operation 0: path not found: /a"},
      {"remove missing", R"({"a":{}})", R"([{"op":"remove","path":"/a/b"}])", Errc::kInvalid,
       "json patch operation 0: path not found: /a/b"},
      {"remove root", R"({})", R"([{"op":"remove","path":""}])", Errc::kInvalid,
       "json patch operation 0: cannot remove the document root"},
      {"replace missing", R"({})", R"([{"op":"replace","path":"/a","value":1}])",
       Errc::kInvalid, "json patch operation 0: path not found: /a"},
      {"add under scalar", R"({"a":1})", R"([{"op":"add","path":"/a/b","value":1}])",
       Errc::kInvalid, "json patch operation 0: path not found: /a/b"},
      {"add past end", "[1]", R"([{"op":"add","path":"/2","value":1}])", Errc::kInvalid,
       "json patch operation 0: array index out of range at /2"},
      {"leading zero", "[1,2]", R"([{"op":"add","path":"/01","value":1}])", Errc::kInvalid,
       "json patch operation 0: invalid array index at /01"},
      {"negative index", "[1,2]", R"([{"op":"remove","path":"/-1"}])", Errc::kInvalid,
       "json patch operation 0: invalid array index at /-1"},
      {"non-numeric index", "[1,2]", R"([{"op":"remove","path":"/x"}])", Errc::kInvalid,
       "json patch operation 0: invalid array index at /x"},
      {"huge index", "[1,2]", R"([{"op":"remove","path":"/99999999999999999999999"}])",
       Errc::kInvalid,
       "json patch operation 0: array index out of range at /99999999999999999999999"},
      {"replace at size", "[1]", R"([{"op":"replace","path":"/1","value":1}])", Errc::kInvalid,
       "json patch operation 0: array index out of range at /1"},
      {"remove dash", "[1]", R"([{"op":"remove","path":"/-"}])", Errc::kInvalid,
       "json patch operation 0: array index out of range at /-"},
      {"dash mid-path", R"({"a":[{"b":1}]})", R"([{"op":"add","path":"/a/-/b","value":1}])",
       Errc::kInvalid, "json patch operation 0: array index out of range at /a/-/b"},
      {"move into child", R"({"a":{"b":1}})", R"([{"op":"move","from":"/a","path":"/a/b/c"}])",
       Errc::kInvalid, R"(json patch operation 0: cannot move "/a" into its own child "/a/b/c")"},
      {"move root", R"({"a":1})", R"([{"op":"move","from":"","path":"/b"}])", Errc::kInvalid,
       R"(json patch operation 0: cannot move "" into its own child "/b")"},
      {"move from missing", R"({})", R"([{"op":"move","from":"/x","path":"/x"}])",
       Errc::kInvalid, "json patch operation 0: path not found: /x"},
      {"copy from missing", R"({})", R"([{"op":"copy","from":"/x","path":"/y"}])",
       Errc::kInvalid, "json patch operation 0: path not found: /x"},
      {"later op fails", R"({"a":1})",
       R"([{"op":"remove","path":"/a"},{"op":"test","path":"/a","value":1}])", Errc::kInvalid,
       "json patch operation 1: path not found: /a"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const json::value target = J(c.target);
    auto r = apply_json_patch(target, J(c.patch));
    ASSERT_FALSE(r) << json::serialize(*r);
    EXPECT_EQ(r.error().code, c.code);
    EXPECT_EQ(r.error().message, c.message);
    EXPECT_EQ(target, J(c.target));
  }
}

TEST(JsonPatch, MalformedBeatsInapplicable) {
  // Operation 0 cannot apply, but operation 1 makes the whole document malformed.
  auto r = apply_json_patch(J("{}"), J(R"([{"op":"remove","path":"/x"},{"op":"nope"}])"));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kBadRequest);
  EXPECT_EQ(r.error().message, R"(json patch operation 1: unknown op "nope")");
}

TEST(JsonPatch, OperationLimit) {
  json::array ops;
  for (std::size_t i = 0; i < kMaxPatchOperations; ++i) {
    ops.push_back(json::object{{"op", "test"}, {"path", ""}, {"value", nullptr}});
  }
  EXPECT_TRUE(apply_json_patch(nullptr, ops));
  ops.push_back(ops.back());
  auto r = apply_json_patch(nullptr, ops);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kBadRequest);
  EXPECT_EQ(r.error().message, "json patch has 10001 operations, more than 10000");
}

TEST(JsonPatch, PointerDepthLimit) {
  json::value doc = 1;
  std::string path;
  for (std::size_t i = 0; i < kMaxPointerDepth; ++i) {
    doc = json::object{{"a", doc}};
    path += "/a";
  }
  auto ok = apply_json_patch(doc, json::array{json::object{{"op", "test"}, {"path", path},
                                                           {"value", 1}}});
  EXPECT_TRUE(ok) << ok.error().message;
  path += "/a";
  auto r = apply_json_patch(doc, json::array{json::object{{"op", "remove"}, {"path", path}}});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kBadRequest);
  EXPECT_EQ(r.error().message,
            R"(json patch operation 0: "path": pointer has more than 64 segments)");
}

TEST(PatchType, FromContentType) {
  EXPECT_EQ(patch_type_from_content_type("application/merge-patch+json"), PatchType::kMerge);
  EXPECT_EQ(patch_type_from_content_type("application/json-patch+json"), PatchType::kJson);
  EXPECT_EQ(patch_type_from_content_type("application/strategic-merge-patch+json"),
            PatchType::kStrategicMerge);
  EXPECT_EQ(patch_type_from_content_type("application/apply-patch+yaml"), PatchType::kApply);
  EXPECT_EQ(patch_type_from_content_type("Application/JSON-Patch+JSON; charset=utf-8"),
            PatchType::kJson);
  EXPECT_EQ(patch_type_from_content_type(" application/merge-patch+json ;charset=UTF-8"),
            PatchType::kMerge);
  EXPECT_EQ(patch_type_from_content_type("application/json"), std::nullopt);
  EXPECT_EQ(patch_type_from_content_type("application/merge-patch+jsonx"), std::nullopt);
  EXPECT_EQ(patch_type_from_content_type(""), std::nullopt);
}

}  // namespace
}  // namespace kos::apiserver
