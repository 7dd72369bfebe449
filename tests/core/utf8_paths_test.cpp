// File names with non-ASCII characters (include/epwa/platform.hpp's path_from_utf8 and
// path_to_utf8): the same UTF-8 name is found, read, listed, mapped and reported on every OS. On
// Windows a path built from a std::string reads it in the ANSI code page, so these fail there
// unless every conversion goes through the two functions.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "epwa/files.hpp"
#include "epwa/load_options.hpp"
#include "epwa/model.hpp"
#include "epwa/platform.hpp"
#include "epwa/session.hpp"
#include "epwa/tokenizer.hpp"
#include "support/error_of.hpp"

namespace fs = std::filesystem;
using epwa::path_from_utf8;
using epwa::path_to_utf8;
using epwa_test::error_of;

namespace {

// Latin-1 letters, a CJK ideograph and an emoji (outside the Basic Multilingual Plane: two UTF-16
// units on Windows).
const std::string kName = "modèle-ü-日本-\xF0\x9F\x99\x82";

std::string utf8_of(const std::u8string& s) {
  return std::string(s.begin(), s.end());
}

fs::path fresh_dir(const std::string& tag) {
  const fs::path d = fs::temp_directory_path() / path_from_utf8("epwa-utf8-" + tag + "-" + kName);
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

TEST(Utf8Paths, NamesRoundTripAndSplitIntoTheRightParts) {
  EXPECT_EQ(path_to_utf8(path_from_utf8(kName)), kName);
  const fs::path p = path_from_utf8("dossier-é/" + kName + ".gguf");
  // u8string() is UTF-8 on every OS: a name read in another code page would differ here.
  EXPECT_EQ(utf8_of(p.filename().u8string()), kName + ".gguf");
  EXPECT_EQ(utf8_of(p.stem().u8string()), kName);
  EXPECT_EQ(p.extension(), ".gguf");
  EXPECT_EQ(path_to_utf8(p.parent_path()), "dossier-é");
  EXPECT_EQ(path_to_utf8(path_from_utf8("")), "");
}

TEST(Utf8Paths, FilesInANonAsciiFolderAreWrittenListedReadAndMapped) {
  const fs::path d = fresh_dir("files");
  const fs::path f = d / path_from_utf8(kName + ".txt");
  { std::ofstream(f, std::ios::binary) << "contenu é"; }
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(d))
    names.push_back(path_to_utf8(e.path().filename()));
  EXPECT_EQ(names, std::vector<std::string>{kName + ".txt"});
  EXPECT_EQ(epwa::read_input_file(f, "--file"), "contenu é");
  {
    const epwa::MappedFile m(f);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(m.bytes().data()), m.size()), "contenu é");
  }
  // Messages name the file in UTF-8, as the user typed it.
  const fs::path missing = d / path_from_utf8("absent-ü.txt");
  EXPECT_EQ(error_of([&] { epwa::read_input_file(missing, "--file"); }),
            "--file '" + path_to_utf8(missing) + "' not found");
  EXPECT_NE(path_to_utf8(missing).find("epwa-utf8-files-" + kName), std::string::npos);
  fs::remove_all(d);
  EXPECT_FALSE(fs::exists(d));
}

TEST(Utf8Paths, EnvironmentValuesRoundTrip) {
  epwa::set_env("EPWA_TEST_UTF8_PATH", "Z:/tmp/" + kName);
  EXPECT_EQ(epwa::get_env("EPWA_TEST_UTF8_PATH").value_or("unset"), "Z:/tmp/" + kName);
  EXPECT_FALSE(epwa::get_env("EPWA_TEST_SURELY_UNSET_VARIABLE").has_value());
}

// The loaders: a checkpoint and a SentencePiece tokenizer copied into a non-ASCII folder load as
// the originals do, and fast mode writes its cache under a non-ASCII cache folder, named after the
// model folder.
TEST(Utf8Paths, ModelTokenizerAndFastCacheLoadFromNonAsciiFolders) {
  const fs::path ref = fs::path(EPWA_TEST_DATA_DIR) / "ref" / "gqa";
  const fs::path bundled = fs::path(EPWA_SOURCE_DIR) / "models" / "epwa-tiny-moe";
  const fs::path d = fresh_dir("model");
  const fs::path model = d / path_from_utf8(kName);
  fs::create_directories(model);
  for (const char* f : {"config.json", "model.safetensors"}) fs::copy_file(ref / f, model / f);
  for (const char* f : {"tokenizer.model", "tokenizer_config.json"})
    fs::copy_file(bundled / f, model / f);

  epwa::LoadOptions o;
  o.warn = [](const std::string&) {};
  o.use_cache = false;
  const std::string want = epwa::router_hash(*epwa::Model::load(ref, o));
  EXPECT_EQ(epwa::router_hash(*epwa::Model::load(model, o)), want);
  EXPECT_EQ(epwa::load_tokenizer(model)->encode("Bonjour, modèle", true, false),
            epwa::load_tokenizer(bundled)->encode("Bonjour, modèle", true, false));

  o.mode = epwa::LoadMode::Fast;
  o.use_cache = true;
  o.cache_dir = d / path_from_utf8("cache-é");
  epwa::LoadReport first, second;
  epwa::Model::load(model, o, &first);
  EXPECT_EQ(first.cache, "miss");
  ASSERT_TRUE(fs::exists(first.cache_path));
  EXPECT_EQ(first.cache_path.parent_path(), o.cache_dir);
  EXPECT_EQ(path_to_utf8(first.cache_path.filename()).rfind(kName + "-", 0), 0u);
  EXPECT_EQ(epwa::router_hash(*epwa::Model::load(model, o, &second)), want);
  EXPECT_EQ(second.cache, "hit");
  fs::remove_all(d);
}

}  // namespace
