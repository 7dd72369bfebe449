// Constrained decoding: the matcher on texts (what it accepts, refuses and calls complete), the
// schemas it refuses, and the token mask on the bundled model's vocabulary: whatever the logits,
// the sampled text is JSON that matches the schema.
#include "epwa/json_constraint.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <random>

#include "epwa/error.hpp"
#include "epwa/tokenizer.hpp"

namespace {

using nlohmann::json;

const epwa::Tokenizer& bundled() {
  static const auto tok =
      epwa::load_tokenizer(std::filesystem::path(EPWA_SOURCE_DIR) / "models" / "epwa-tiny-moe");
  return *tok;
}
std::shared_ptr<const epwa::TokenTexts> bundled_texts() {
  static const auto texts = std::make_shared<const epwa::TokenTexts>(bundled());
  return texts;
}

epwa::JsonConstraint matcher(const json& schema, std::string suffix = "") {
  return epwa::JsonConstraint(std::make_shared<const epwa::JsonSchema>(schema), bundled_texts(),
                              std::move(suffix), {bundled().eos_id()});
}

const json kPerson = json::parse(R"({
  "type": "object",
  "properties": {
    "name": {"type": "string"},
    "age": {"type": "integer"},
    "colour": {"enum": ["red", "green", 7, null]},
    "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
    "ok": {"type": ["boolean", "null"]}
  },
  "required": ["name", "age"]
})");

TEST(JsonConstraint, AcceptsTextsOfTheSchemaAndRefusesOthers) {
  auto ok = [](const json& s, const std::string& t) { return matcher(s).accepts(t); };
  EXPECT_TRUE(ok(kPerson, R"({"name": "Bo", "age": 31})"));
  EXPECT_TRUE(ok(kPerson, R"({ "age":-4 ,"name":"a\"b\u00e9\n", "colour": 7, "tags": ["x"]})"));
  EXPECT_TRUE(ok(kPerson, R"({"name": "x", "age": 1, "ok": null, "colour": "green"})"));
  EXPECT_TRUE(ok(kPerson, R"({"na)"));                   // a prefix
  EXPECT_FALSE(ok(kPerson, R"({"nam")"));                // no such key
  EXPECT_FALSE(ok(kPerson, R"({"zzz)"));                 // no key starts so (no other keys allowed)
  EXPECT_FALSE(ok(kPerson, R"({"age": 1.5)"));           // an integer
  EXPECT_FALSE(ok(kPerson, R"({"age": 01)"));            // JSON numbers have no leading zeros
  EXPECT_FALSE(ok(kPerson, R"({"name": "x"})"));         // "age" is required
  EXPECT_FALSE(ok(kPerson, R"({"name": "x", "name")"));  // once each
  EXPECT_FALSE(ok(kPerson, R"({"colour": "blue")"));     // not among the enum's
  EXPECT_FALSE(ok(kPerson, R"({"colour": 77)"));         // 7, not 77
  EXPECT_FALSE(ok(kPerson, R"({"tags": ["a", "b", "c")"));  // maxItems
  EXPECT_FALSE(ok(kPerson, R"({"ok": 1)"));
  EXPECT_FALSE(ok(kPerson, "{\"name\": \"a\tb\""));  // a raw control character in a string
  EXPECT_FALSE(ok(kPerson, R"({"name": "\x")"));     // not an escape
  EXPECT_FALSE(ok(kPerson, R"({"name": "a"}})"));    // nothing after the value
  EXPECT_FALSE(ok(kPerson, "[1]"));
  EXPECT_FALSE(ok(kPerson, std::string(13, ' ') + "{"));  // no endless whitespace
  EXPECT_TRUE(ok(kPerson, std::string(12, ' ') + "{"));
}

TEST(JsonConstraint, CompleteOnlyAtTheEndOfTheValueAndSuffix) {
  auto done = [](const json& s, const std::string& t, std::string suffix = "") {
    auto m = matcher(s, std::move(suffix));
    for (char c : t) {
      EXPECT_TRUE(m.accepts(std::string(1, c))) << t;
      // Advance by the byte: accept() takes tokens; the bundled vocabulary has every byte.
      bool fed = false;
      for (int32_t id = 0; id < bundled_texts()->size() && !fed; ++id)
        if (!bundled_texts()->control(id) && bundled_texts()->bytes(id) == std::string(1, c)) {
          m.accept(id);
          fed = true;
        }
      EXPECT_TRUE(fed) << "no token for byte " << int(c);
    }
    return m.complete();
  };
  EXPECT_TRUE(done(kPerson, R"({"name": "Bo", "age": 31})"));
  EXPECT_FALSE(done(kPerson, R"({"name": "Bo", "age": 31)"));
  const json num = {{"type", "number"}};
  EXPECT_TRUE(done(num, "-0.5e+3"));
  EXPECT_FALSE(done(num, "-0.5e"));
  EXPECT_TRUE(done(num, "12"));  // a number ends where the text may end
  EXPECT_TRUE(done({{"enum", {1, 10}}}, "1"));
  EXPECT_TRUE(done({{"enum", {1, 10}}}, "10"));
  EXPECT_FALSE(done(kPerson,
                    R"({"name": "Bo", "age": 3})"
                    "}",
                    "}\n</x>"));
  EXPECT_TRUE(done({{"type", "object"}}, R"({"a": [1, {"b": null}]}}
</x>)",
                   "}\n</x>"));
}

TEST(JsonConstraint, AnyOfRefsAndAnyValue) {
  auto ok = [](const json& s, const std::string& t) { return matcher(s).accepts(t); };
  const json maybe = json::parse(R"({"anyOf": [{"type": "string"}, {"type": "null"}]})");
  EXPECT_TRUE(ok(maybe, "null"));
  EXPECT_TRUE(ok(maybe, R"("x")"));
  EXPECT_FALSE(ok(maybe, "1"));
  const json tree = json::parse(R"({
    "$defs": {"node": {"type": "object", "properties": {
      "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}},
    "$ref": "#/$defs/node"})");
  EXPECT_TRUE(ok(tree, R"({"kids": [{"kids": []}, {}]})"));
  EXPECT_FALSE(ok(tree, R"({"kids": [1)"));
  EXPECT_TRUE(ok(json::object(), R"([{"a": [true, -1e9, "s"]}, null])"));
  EXPECT_TRUE(ok({{"type", "object"}}, R"({"any key": {"x": [1]}})"));
  EXPECT_FALSE(ok({{"type", "object"}}, "[]"));
}

TEST(JsonConstraint, RefusesWhatItCannotEnforce) {
  auto refused = [](const char* schema) {
    try {
      epwa::JsonSchema s(json::parse(schema));
    } catch (const epwa::Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(refused(R"({"allOf": [{}]})").find("allOf"), std::string::npos);
  EXPECT_NE(
      refused(R"({"anyOf": [{"type": "object"}, {"type": "object"}]})").find("same JSON type"),
      std::string::npos);
  EXPECT_NE(refused(R"({"type": "object", "required": ["x"]})").find("\"x\""), std::string::npos);
  EXPECT_NE(refused(R"({"type": "strin"})").find("strin"), std::string::npos);
  EXPECT_NE(refused(R"({"$ref": "#/$defs/none"})").find("points nowhere"), std::string::npos);
  EXPECT_NE(refused(R"({"$ref": "http://x/y"})").find("local"), std::string::npos);
  EXPECT_NE(refused("false").find("false"), std::string::npos);
}

// Alternatives: one of several fixed prefixes (a function name), then JSON of that one's schema.
TEST(JsonConstraint, AlternativesPickTheSchemaByTheirPrefix) {
  auto schema = [](const char* text) {
    return std::make_shared<const epwa::JsonSchema>(json::parse(text));
  };
  const epwa::JsonConstraint m({{"get\", \"args\": ", schema(R"({"type": "integer"})")},
                                {"get_all\", \"args\": ", schema(R"({"type": "boolean"})")}},
                               bundled_texts(), "}", {bundled().eos_id()});
  EXPECT_TRUE(m.accepts("get\", \"args\": 12}"));
  EXPECT_TRUE(m.accepts("get_all\", \"args\": true}"));
  EXPECT_FALSE(m.accepts("get\", \"args\": true"));
  EXPECT_FALSE(m.accepts("get_all\", \"args\": 1"));
  EXPECT_FALSE(m.accepts("got"));
  EXPECT_THROW(epwa::JsonConstraint({{"a", schema("{}")}, {"ab", schema("{}")}}, bundled_texts(),
                                    "", {bundled().eos_id()}),
               epwa::Error);
}

// Random logits, masked, then the most likely token: each run's text is valid JSON of the
// schema, ends complete, and after it only the end token is left.
TEST(JsonConstraint, MaskedSamplingAlwaysWritesValidJson) {
  const auto texts = bundled_texts();
  const auto schema = std::make_shared<const epwa::JsonSchema>(kPerson);
  const int32_t eos = bundled().eos_id();
  for (uint32_t seed = 0; seed < 20; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    epwa::JsonConstraint m(schema, texts, "", {eos});
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> u(0, 1);
    std::string text;
    bool ended = false;
    for (int step = 0; step < 3000 && !ended; ++step) {
      std::vector<float> logits(texts->size());
      for (int32_t id = 0; id < texts->size(); ++id) {
        logits[id] = u(rng);
        // Lean towards closing strings and values, so that runs end within the steps.
        if (texts->bytes(id).find_first_of("\"}],") != std::string::npos) logits[id] += 0.3f;
        if (id == eos) logits[id] += 10;  // refused until the text is complete
      }
      m.mask(logits);
      const auto t =
          static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
      ASSERT_NE(logits[t], -std::numeric_limits<float>::infinity());
      m.accept(t);
      if (t == eos) {
        ended = true;
        // After the complete text only the end token is left.
        std::vector<float> after(texts->size(), 0.0f);
        m.mask(after);
        for (int32_t id = 0; id < texts->size(); ++id)
          ASSERT_EQ(after[id] == 0.0f, id == eos) << id;
      } else {
        text += texts->bytes(t);
      }
    }
    ASSERT_TRUE(ended) << text;
    const json v = json::parse(text);  // throws on invalid JSON
    ASSERT_TRUE(v.is_object()) << text;
    EXPECT_TRUE(v.at("name").is_string()) << text;
    EXPECT_TRUE(v.at("age").is_number_integer()) << text;
    for (const auto& [k, val] : v.items()) EXPECT_TRUE(kPerson["properties"].contains(k)) << k;
    if (v.contains("tags")) {
      EXPECT_LE(v["tags"].size(), 2u);
    }
  }
}

}  // namespace

namespace {

// A vocabulary given as bytes: plain tokens are those without quote, backslash or control bytes;
// the mask lets through exactly the tokens that continue the value, and the end token once it is
// complete.
TEST(TokenTexts, FromBytesMasksAsFromATokenizer) {
  const std::vector<std::string> bytes = {"{\"", "a", "\":", " 1", "}", "\\n", "x\"", "<end>"};
  const auto texts = std::make_shared<const epwa::TokenTexts>(
      bytes, std::vector<bool>{false, false, false, false, false, false, false, true});
  EXPECT_TRUE(texts->plain(1));
  EXPECT_TRUE(texts->plain(3));
  EXPECT_FALSE(texts->plain(0));
  EXPECT_FALSE(texts->plain(5));
  EXPECT_FALSE(texts->plain(7));  // control
  const auto schema = std::make_shared<const epwa::JsonSchema>(
      nlohmann::json::parse(R"({"type": "object", "properties": {"a": {"type": "integer"}}})"));
  epwa::JsonConstraint c(schema, texts, "", {7});
  std::vector<float> logits(bytes.size(), 0.0f);
  const std::vector<int32_t> reply = {0, 1, 2, 3, 4};  // {"a": 1}
  for (int32_t t : reply) {
    std::fill(logits.begin(), logits.end(), 0.0f);
    c.mask(logits);
    EXPECT_EQ(logits[t], 0.0f) << t;
    EXPECT_TRUE(std::isinf(logits[7])) << t;  // not complete yet
    c.accept(t);
  }
  std::fill(logits.begin(), logits.end(), 0.0f);
  c.mask(logits);
  EXPECT_EQ(logits[7], 0.0f);
  for (int32_t t = 0; t < 7; ++t) EXPECT_TRUE(std::isinf(logits[t])) << t;
  EXPECT_THROW(epwa::TokenTexts({"a", "b"}, {false}), epwa::Error);
}

}  // namespace
