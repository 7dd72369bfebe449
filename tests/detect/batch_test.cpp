// JSON-lines batch input and --resume bookkeeping (include/epwa/batch.hpp).
#include "epwa/batch.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>

#include "epwa/error.hpp"

namespace fs = std::filesystem;

namespace {

TEST(BatchLine, ObjectsTextAndRefusedJson) {
  const auto o = epwa::parse_batch_line(R"({"id": 7, "text": "hi"})");
  ASSERT_TRUE(o.is_object);
  EXPECT_EQ(o.object["text"], "hi");
  const auto t = epwa::parse_batch_line("The river is wide");
  EXPECT_FALSE(t.is_object);
  EXPECT_EQ(t.text, "The river is wide");
  // JSON that is not an object is an error, not text to score.
  for (const char* bad : {"[1,2,3]", "null", "42", "\"quoted\"", "true", "{\"text\": "})
    EXPECT_THROW(epwa::parse_batch_line(bad), epwa::Error) << bad;
}

TEST(BatchLine, ByteOrderMarkAndCarriageReturnAreStripped) {
  const auto o = epwa::parse_batch_line("\xEF\xBB\xBF{\"text\": \"hi\"}\r");
  ASSERT_TRUE(o.is_object);
  EXPECT_EQ(o.object["text"], "hi");
  EXPECT_EQ(epwa::parse_batch_line("\xEF\xBB\xBFplain\r").text, "plain");
  EXPECT_THROW(epwa::parse_batch_line("\xEF\xBB\xBFnull"), epwa::Error);
}

// Random bytes, and JSON-like lines cut and corrupted anywhere: each line is an object, plain text
// or one Error, never a crash or another exception (also run under AddressSanitizer).
TEST(BatchLine, RandomAndCorruptedLinesParseOrFailCleanly) {
  std::mt19937 rng(11);
  const std::string seeds[] = {R"({"id": 7, "text": "hi", "prompt": [1, 2, 3]})",
                               "\xEF\xBB\xBF{\"text\": \"caf\xC3\xA9\"}\r", "[1,2,3]",
                               "plain text"};
  for (int i = 0; i < 20000; ++i) {
    std::string line;
    if (i % 2 == 0) {
      line.resize(rng() % 40);
      for (char& c : line) c = static_cast<char>(rng() % 256);
    } else {
      line = seeds[rng() % 4];
      line.resize(rng() % (line.size() + 1));
      if (!line.empty())
        line[rng() % line.size()] =
            "{}[]\",:\\\xFF"
            "0n"[rng() % 11];
    }
    try {
      const epwa::BatchLine b = epwa::parse_batch_line(line);
      if (b.is_object) {
        EXPECT_TRUE(b.object.is_object());
      }
    } catch (const epwa::Error&) {
    }
  }
}

TEST(BatchKey, IdElseLineNumber) {
  EXPECT_EQ(epwa::batch_key(nlohmann::json{{"id", "a"}}, 3), "id:\"a\"");
  EXPECT_NE(epwa::batch_key(nlohmann::json{{"id", 1}}, 3),
            epwa::batch_key(nlohmann::json{{"id", "1"}}, 3));
  EXPECT_EQ(epwa::batch_key(nlohmann::json{{"text", "x"}}, 3), "line:3");
  EXPECT_EQ(epwa::batch_key(nlohmann::json(), 4), "line:4");
}

// Two input lines with one id: a run stopped after the first resumes with the second (each result
// is counted off once), and a finished run skips both.
TEST(ResumeBatchOutput, DuplicateIdsAreMatchedToTheirResultsInOrder) {
  const fs::path p = fs::temp_directory_path() / "epwa-batch-dup.jsonl";
  std::ofstream(p, std::ios::binary) << "{\"line\": 1, \"id\": \"x\"}\n";
  auto progress = epwa::resume_batch_output(p);
  EXPECT_TRUE(progress.take("id:\"x\""));   // line 1: done
  EXPECT_FALSE(progress.take("id:\"x\""));  // line 2, same id: still to do
  std::ofstream(p, std::ios::binary | std::ios::app) << "{\"line\": 2, \"id\": \"x\"}\n";
  progress = epwa::resume_batch_output(p);
  EXPECT_TRUE(progress.take("id:\"x\""));
  EXPECT_TRUE(progress.take("id:\"x\""));
  EXPECT_FALSE(progress.take("id:\"x\""));
  fs::remove(p);
}

TEST(ResumeBatchOutput, KeysOfCompleteLinesAndTornTailRemoved) {
  const fs::path p = fs::temp_directory_path() / "epwa-batch-resume.jsonl";
  EXPECT_TRUE(epwa::resume_batch_output(p.string() + ".absent").done.empty());
  std::ofstream(p, std::ios::binary) << "{\"line\": 1, \"id\": \"a\", \"detected\": true}\n"
                                     << "{\"line\": 2, \"error\": \"x\"}\n"
                                     << "{\"line\": 3, \"z\"";
  const auto progress = epwa::resume_batch_output(p);
  const auto& done = progress.done;
  EXPECT_TRUE(progress.any_detected);
  EXPECT_TRUE(progress.any_error);
  EXPECT_EQ(done.size(), 2u);
  EXPECT_TRUE(done.contains("id:\"a\""));
  EXPECT_TRUE(done.contains("line:2"));
  std::string rest;
  {  // closed before the file is rewritten and removed: Windows cannot delete an open file
    std::ifstream f(p, std::ios::binary);
    rest.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  }
  EXPECT_EQ(rest.back(), '\n');
  EXPECT_EQ(rest.find("\"line\": 3"), std::string::npos);

  std::ofstream(p, std::ios::binary) << "not a result\n";
  EXPECT_THROW(epwa::resume_batch_output(p), epwa::Error);
  fs::remove(p);
}

}  // namespace
