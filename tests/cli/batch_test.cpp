// `epwa detect --jsonl` through the real binary: results written as they are done, --resume after
// an interruption, lines that are not objects, byte-order marks, files that are folders.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "support/run_cli.hpp"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

fs::path temp_dir(const std::string& name) {
  const fs::path d =
      fs::temp_directory_path() / ("epwa-batch-" + name + "-" + std::to_string(getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

std::vector<json> json_lines(const std::string& s) {
  std::vector<json> out;
  size_t pos = 0;
  for (size_t nl; (nl = s.find('\n', pos)) != std::string::npos; pos = nl + 1)
    out.push_back(json::parse(s.substr(pos, nl - pos)));
  return out;
}

// `lines` held-out paragraphs as a JSONL batch with ids "p1", "p2", ...
fs::path write_batch(const fs::path& dir, int lines) {
  std::ifstream in(fs::path(EPWA_SOURCE_DIR) / "data" / "heldout" / "heldout.txt");
  const fs::path p = dir / "in.jsonl";
  std::ofstream out(p);
  std::string line;
  for (int i = 1; i <= lines && std::getline(in, line); ++i)
    out << json{{"id", "p" + std::to_string(i)}, {"text", line.substr(0, 300)}}.dump() << "\n";
  return p;
}

const std::string kDetect = "detect --quiet --key batch-key --jsonl ";

TEST(Batch, InterruptedRunKeepsFinishedLinesAndResumeCompletesIt) {
  const fs::path d = temp_dir("resume");
  const fs::path in = write_batch(d, 150);
  const fs::path full = d / "full.jsonl", part = d / "part.jsonl";
  // Held-out human text: scored, not watermarked (exit 1).
  ASSERT_EQ(epwa_test::run_cli(kDetect + in.string() + " -o " + full.string()).code, 1);
  const auto expected = json_lines(slurp(full));
  ASSERT_EQ(expected.size(), 150u);
  EXPECT_EQ(expected[4].at("id"), "p5");
  EXPECT_EQ(expected[4].at("line"), 5);

  // Killed once its first results are on disk: they are there, complete, in input order.
  const std::string script = std::string(EPWA_BINARY) + " " + kDetect + in.string() + " -o " +
                             part.string() + " & pid=$!; for i in $(seq 600); do " + "[ -s " +
                             part.string() + " ] && break; sleep 0.05; done; " +
                             "kill $pid; wait $pid";
  epwa_test::run_command("sh -c '" + script + "' 2>/dev/null");
  const auto partial = json_lines(slurp(part));
  ASSERT_GE(partial.size(), 1u);
  ASSERT_LT(partial.size(), expected.size()) << "not interrupted: make the batch longer";
  for (size_t i = 0; i < partial.size(); ++i) EXPECT_EQ(partial[i], expected[i]);

  // A torn last line (as a kill mid-write leaves) is redone; finished ids are not.
  std::ofstream(part, std::ios::app) << "{\"line\": 99, \"z\"";
  const auto r = epwa_test::run_cli(kDetect + in.string() + " -o " + part.string() + " --resume");
  ASSERT_EQ(r.code, 1) << r.out;
  EXPECT_EQ(json_lines(slurp(part)), expected);
  // Nothing left to do: the file is unchanged.
  ASSERT_EQ(epwa_test::run_cli(kDetect + in.string() + " -o " + part.string() + " --resume").code,
            1);
  EXPECT_EQ(json_lines(slurp(part)), expected);
}

TEST(Batch, OutputIsNeverOverwrittenOrTheInput) {
  const fs::path d = temp_dir("out");
  const fs::path in = write_batch(d, 1);
  std::ofstream(d / "old.jsonl") << "precious\n";
  auto r = epwa_test::run_cli(kDetect + in.string() + " -o " + (d / "old.jsonl").string());
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("exists: give --resume"), std::string::npos) << r.out;
  EXPECT_EQ(slurp(d / "old.jsonl"), "precious\n");
  r = epwa_test::run_cli(kDetect + in.string() + " -o " + in.string() + " --resume");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("is the input"), std::string::npos) << r.out;
  r = epwa_test::run_cli(kDetect + in.string() + " --resume");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("--output"), std::string::npos) << r.out;
}

TEST(Batch, LinesThatAreNotObjectsAreErrorsAndByteOrderMarksAreStripped) {
  const fs::path d = temp_dir("kinds");
  const fs::path in = d / "in.jsonl";
  std::ofstream(in, std::ios::binary)
      << "\xEF\xBB\xBF{\"id\": 1, \"text\": \"The river is wide\"}\n"
      << "[1,2,3]\n"
      << "null\n"
      << "{\"id\": 4, \"tokens\": 5}\n"
      << "The river is wide\n";
  const auto r = epwa_test::run_cli(kDetect + in.string(), epwa_test::Stderr::Drop);
  const auto lines = json_lines(r.out);
  ASSERT_EQ(lines.size(), 5u) << r.out;
  EXPECT_FALSE(lines[0].contains("error")) << lines[0];
  EXPECT_EQ(lines[0].at("id"), 1);
  EXPECT_NE(lines[1].at("error").get<std::string>().find("not an object"), std::string::npos);
  EXPECT_NE(lines[2].at("error").get<std::string>().find("not an object"), std::string::npos);
  EXPECT_EQ(lines[3].at("id"), 4);  // an error line keeps its id, for --resume
  EXPECT_TRUE(lines[3].contains("error"));
  // The same text as a BOM-prefixed object and as plain text: the same score.
  EXPECT_EQ(lines[0].at("z"), lines[4].at("z"));
}

TEST(Batch, FoldersWhereFilesAreExpected) {
  const fs::path d = temp_dir("dirs");
  const std::string dir = d.string();
  for (const std::string& args :
       {"--key k --jsonl " + dir, "--key k --file " + dir, "--key-file " + dir + " --text hi"}) {
    const auto r = epwa_test::run_cli("detect --quiet " + args);
    EXPECT_NE(r.code, 0) << args;
    EXPECT_NE(r.out.find("'" + dir + "' is a directory, not a file"), std::string::npos)
        << args << r.out;
    EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << args << r.out;
  }
}

}  // namespace

namespace {

// detect's exit status, as grep's: 0 watermarked, 1 not watermarked, 2 error; the default output
// gives the green fraction and the tokens scored.
TEST(DetectExit, WatermarkedNotWatermarkedOrError) {
  const fs::path d = temp_dir("exit");
  const auto g = epwa_test::run_cli(
      "generate -q --prompt 'The ship sailed into the harbour' --watermark gsg --key exit-key "
      "-n 100 --temperature 1 --seed 3",
      epwa_test::Stderr::Drop);
  ASSERT_EQ(g.code, 0);
  std::ofstream(d / "marked.txt") << g.out;
  const std::string file = " --file " + (d / "marked.txt").string();
  const auto yes = epwa_test::run_cli("detect -q --key exit-key" + file);
  EXPECT_EQ(yes.code, 0) << yes.out;
  EXPECT_NE(yes.out.find("full: WATERMARKED (z above threshold): z="), std::string::npos)
      << yes.out;
  EXPECT_NE(yes.out.find(" tokens scored (green fraction 0."), std::string::npos) << yes.out;
  const auto no = epwa_test::run_cli("detect -q --key other-key" + file);
  EXPECT_EQ(no.code, 1) << no.out;
  EXPECT_NE(no.out.find("full: not watermarked (z not above threshold)"), std::string::npos)
      << no.out;
  EXPECT_EQ(epwa_test::run_cli("detect -q --key k --text ''").code, 2);
  EXPECT_EQ(epwa_test::run_cli("detect -q --key k --file /nonexistent").code, 2);
  EXPECT_EQ(epwa_test::run_cli("detect -q --key k --file " + d.string() + " --bogus").code, 2);
  const auto j = json::parse(epwa_test::run_cli("detect -q --json --key exit-key" + file).out);
  EXPECT_DOUBLE_EQ(j.at("green_fraction").get<double>(),
                   j.at("g").get<double>() / j.at("n").get<double>());

  // A batch: 0 when a line is watermarked, 1 when none is, 2 when a line failed.
  std::ofstream(d / "one.jsonl") << json{{"text", g.out}}.dump() << "\nThe river is wide\n";
  std::ofstream(d / "none.jsonl") << "The river is wide\n";
  std::ofstream(d / "bad.jsonl") << json{{"text", g.out}}.dump() << "\nnull\n";
  const std::string batch = "detect -q --key exit-key --jsonl " + d.string();
  EXPECT_EQ(epwa_test::run_cli(batch + "/one.jsonl").code, 0);
  EXPECT_EQ(epwa_test::run_cli(batch + "/none.jsonl").code, 1);
  EXPECT_EQ(epwa_test::run_cli(batch + "/bad.jsonl").code, 2);
  // Resumed with nothing left to do: the kept results decide, as for the whole batch.
  const std::string out = " -o " + (d / "one.out").string();
  EXPECT_EQ(epwa_test::run_cli(batch + "/one.jsonl" + out).code, 0);
  EXPECT_EQ(epwa_test::run_cli(batch + "/one.jsonl" + out + " --resume").code, 0);
}

}  // namespace
