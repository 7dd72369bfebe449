// epwa generate --json-schema: the text is JSON of the schema, watermarked or not; a schema file
// that is not JSON, or holds what the matcher cannot enforce, is a one-line error.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "support/run_cli.hpp"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

fs::path write(const std::string& name, const std::string& text) {
  const fs::path p = fs::temp_directory_path() / name;
  std::ofstream(p) << text;
  return p;
}

TEST(JsonSchemaCli, GeneratedTextFollowsTheSchema) {
  const fs::path schema = write("epwa-cli-schema.json", R"({"type": "object",
      "properties": {"verse": {"type": "integer"}, "tags": {"type": "array",
      "items": {"enum": ["law", "war", "psalm"]}, "maxItems": 3}}, "required": ["verse", "tags"]})");
  for (const char* extra : {"", "--watermark gsg --key cli-schema-key"})
    for (int seed = 1; seed <= 3; ++seed) {
      const auto r = epwa_test::run_cli(
          "generate -q --prompt 'The river' -n 200 --temperature 1 --json --seed " +
              std::to_string(seed) + " --json-schema " + schema.string() + " " + extra,
          epwa_test::Stderr::Drop);
      ASSERT_EQ(r.code, 0) << r.out;
      const json out = json::parse(r.out);
      const json v = json::parse(out["text"].get<std::string>());
      EXPECT_TRUE(v.at("verse").is_number_integer()) << v.dump();
      ASSERT_TRUE(v.at("tags").is_array()) << v.dump();
      EXPECT_LE(v["tags"].size(), 3u);
      for (const json& t : v["tags"]) EXPECT_TRUE(t == "law" || t == "war" || t == "psalm");
      EXPECT_EQ(v.size(), 2u);
    }
  fs::remove(schema);
}

TEST(JsonSchemaCli, BadSchemaFilesAreOneLineErrors) {
  const fs::path unsupported = write("epwa-cli-allof.json", R"({"allOf": []})");
  const fs::path broken = write("epwa-cli-broken.json", "{\"type\": ");
  for (const auto& [file, want] : {std::pair{unsupported, std::string("allOf")},
                                   std::pair{broken, std::string("not valid JSON")}}) {
    const auto r =
        epwa_test::run_cli("generate -q --prompt hi -n 2 --json-schema " + file.string());
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.out.find("--json-schema"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(want), std::string::npos) << r.out;
    EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
    fs::remove(file);
  }
}

}  // namespace
