// File helpers (include/epwa/files.hpp): clear errors for missing files and folders, outputs that
// are inputs, and all-or-nothing writes.
#include "epwa/files.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "epwa/error.hpp"
#include "support/error_of.hpp"

namespace fs = std::filesystem;

using epwa_test::error_of;

namespace {

fs::path fresh_dir(const std::string& name) {
  const fs::path d = fs::temp_directory_path() / ("epwa-files-" + name);
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

TEST(Files, ReadingAFolderOrAMissingFileNamesIt) {
  const fs::path d = fresh_dir("read");
  EXPECT_EQ(error_of([&] { epwa::read_input_file(d, "--file"); }),
            "--file '" + d.string() + "' is a directory, not a file");
  EXPECT_EQ(error_of([&] { epwa::read_input_file(d / "no", "--file"); }),
            "--file '" + (d / "no").string() + "' not found");
  std::ofstream(d / "a.txt") << "abc";
  EXPECT_EQ(epwa::read_input_file(d / "a.txt", "--file"), "abc");
}

TEST(Files, OutputThatIsOrIsInsideAnInputIsRefused) {
  const fs::path d = fresh_dir("out");
  fs::create_directories(d / "model");
  std::ofstream(d / "m.gguf") << "x";
  EXPECT_NE(error_of([&] {
              epwa::check_output_not_input(d / "m.gguf", {d / "m.gguf"}, "--out");
            }).find("is the input"),
            std::string::npos);
  // Spelled differently: a relative detour and a trailing separator.
  EXPECT_NE(error_of([&] {
              epwa::check_output_not_input(d / "model" / ".." / "m.gguf", {d / "m.gguf"}, "--out");
            }).find("is the input"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              epwa::check_output_not_input(d / "model/", {d / "model"}, "--out");
            }).find("is the input"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              epwa::check_output_not_input(d / "model" / "x.gguf", {d / "model"}, "--out");
            }).find("inside the input folder"),
            std::string::npos);
  EXPECT_NO_THROW(epwa::check_output_not_input(d / "model.gguf", {d / "model"}, "--out"));
  EXPECT_NO_THROW(epwa::check_output_not_input(d / "new.gguf", {d / "m.gguf"}, "--out"));
}

TEST(Files, WriteViaTempLeavesTheTargetAloneOnFailure) {
  const fs::path d = fresh_dir("temp");
  const fs::path out = d / "out.bin";
  std::ofstream(out) << "old";
  EXPECT_THROW(epwa::write_via_temp(out,
                                    [](const fs::path& tmp) {
                                      std::ofstream(tmp) << "half";
                                      throw epwa::Error("disk full");
                                    }),
               epwa::Error);
  EXPECT_EQ(epwa::read_input_file(out, "out"), "old");
  EXPECT_EQ(std::distance(fs::directory_iterator(d), fs::directory_iterator()), 1);
  epwa::write_via_temp(out, [](const fs::path& tmp) { std::ofstream(tmp) << "new"; });
  EXPECT_EQ(epwa::read_input_file(out, "out"), "new");
  EXPECT_NE(error_of([&] { epwa::write_via_temp(d, [](const fs::path&) {}); }).find("directory"),
            std::string::npos);
}

}  // namespace
