// epwa hash / generate / detect through the real binary: JSON round trip, batch mode, and one-line
// errors with a non-zero exit status.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>

#include "bundled.hpp"
#include "epwa/session.hpp"
#include "support/run_cli.hpp"

namespace fs = std::filesystem;

namespace {

struct Result {
  int status = -1;
  std::string out, err;  // stdout, stderr
};

Result run(const std::string& args) {
  // One file per test process: ctest -j runs this program's tests side by side.
  const fs::path err =
      fs::temp_directory_path() / ("epwa-cli-test-stderr-" + std::to_string(getpid()) + ".txt");
  const std::string cmd = std::string("env -u EPW_KEY -u EPW_MODEL_PATH EPWA_THREADS=2 '") +
                          EPWA_BINARY + "' " + args + " 2>'" + err.string() + "'";
  Result r;
  const auto c = epwa_test::run_command(cmd);
  r.out = c.out;
  r.status = c.code;
  std::ifstream f(err);
  r.err.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  return r;
}

std::string join(const std::vector<int32_t>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(v[i]);
  }
  return s;
}

// The last non-empty line of the output, as JSON.
nlohmann::json last_json_line(const std::string& out) {
  size_t end = out.size();
  while (end > 0 && out[end - 1] == '\n') --end;
  const size_t nl = end > 0 ? out.rfind('\n', end - 1) : std::string::npos;
  const size_t start = nl == std::string::npos ? 0 : nl + 1;
  return nlohmann::json::parse(out.substr(start, end - start));
}

TEST(Cli, HashMatchesTheLibrary) {
  const Result r = run("hash");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(r.out, epwa::router_hash(bundled::model()) + "\n");
}

TEST(Cli, GenerateJsonThenDetectRoundTrip) {
  const Result g = run(
      "generate --prompt 'The ship sailed into the harbour at dawn' --watermark gsg --key cli-key "
      "--max-new-tokens 120 --temperature 1 --seed 3 --json");
  ASSERT_EQ(g.status, 0) << g.out;
  const auto j = last_json_line(g.out);
  const auto prompt = j.at("prompt_tokens").get<std::vector<int32_t>>();
  const auto tokens = j.at("tokens").get<std::vector<int32_t>>();
  ASSERT_EQ(prompt.front(), bundled::tokenizer().bos_id());
  ASSERT_EQ(tokens.size(), 120u);
  EXPECT_FALSE(j.at("text").get<std::string>().empty());
  const auto& w = j.at("watermark");
  EXPECT_EQ(w.at("mode"), "gsg");
  EXPECT_EQ(w.at("gamma"), 0.5);
  EXPECT_EQ(w.at("delta"), 2.0);
  EXPECT_EQ(w.at("router_layer"), bundled::model().config().num_layers - 1);
  EXPECT_EQ(w.at("router_hash"), epwa::router_hash(bundled::model()));

  // Token ids with the prompt: exactly the generation's alignment.
  const Result d = run("detect --key cli-key --prompt-tokens " + join(prompt) + " --tokens " +
                       join(tokens) + " --tokens-detail --json");
  ASSERT_EQ(d.status, 0) << d.out;
  const auto r = last_json_line(d.out);
  EXPECT_TRUE(r.at("detected").get<bool>()) << d.out;
  EXPECT_GT(r.at("z").get<double>(), 4.0);
  EXPECT_EQ(r.at("tokens").size(), tokens.size());
  EXPECT_TRUE(r.at("tokens")[0].contains("piece"));

  // The text alone (prompt unknown), and a wrong key: detected / not detected.
  const std::string text = j.at("text").get<std::string>();
  const fs::path file = fs::temp_directory_path() / "epwa-cli-text.txt";
  std::ofstream(file) << text;
  const Result t = run("detect --key cli-key --file '" + file.string() + "' --json");
  ASSERT_EQ(t.status, 0) << t.out;
  EXPECT_TRUE(last_json_line(t.out).at("detected").get<bool>()) << t.out;
  const Result wrong = run("detect --key other-key --file '" + file.string() + "' --json");
  ASSERT_EQ(wrong.status, 1) << wrong.out;  // scored, not watermarked
  EXPECT_FALSE(last_json_line(wrong.out).at("detected").get<bool>()) << wrong.out;
  fs::remove(file);

  // Batch: the generate line itself, a plain human line and an empty line.
  const fs::path batch = fs::temp_directory_path() / "epwa-cli-batch.jsonl";
  {
    std::ofstream b(batch);
    b << j.dump() << "\n" << bundled::lines("heldout.txt", 1)[0] << "\n\n";
  }
  const Result bt =
      run("detect --key cli-key --method cspv --sample 60 --jsonl '" + batch.string() + "'");
  ASSERT_EQ(bt.status, 2) << bt.out;  // the empty line failed
  std::vector<nlohmann::json> lines;
  size_t pos = 0;
  for (size_t nl; (nl = bt.out.find('\n', pos)) != std::string::npos; pos = nl + 1)
    lines.push_back(nlohmann::json::parse(bt.out.substr(pos, nl - pos)));
  ASSERT_EQ(lines.size(), 3u) << bt.out;
  EXPECT_TRUE(lines[0].at("detected").get<bool>());
  EXPECT_EQ(lines[0].at("n"), 60);
  EXPECT_EQ(lines[0].at("strata").size(), 3u);
  EXPECT_FALSE(lines[1].at("detected").get<bool>());
  EXPECT_TRUE(lines[2].contains("error"));
  EXPECT_EQ(lines[2].at("line"), 3);
  fs::remove(batch);
}

// The printed continuation keeps its leading space: prompt + text is the generated string.
TEST(Cli, GenerateTextContinuesThePrompt) {
  const Result g = run("generate -q --prompt 'The river' -n 12 --json");
  ASSERT_EQ(g.status, 0) << g.err;
  const auto j = last_json_line(g.out);
  auto ids = j.at("prompt_tokens").get<std::vector<int32_t>>();
  for (int32_t t : j.at("tokens")) ids.push_back(t);
  const std::string text = j.at("text").get<std::string>();
  EXPECT_EQ("The river" + text, bundled::tokenizer().decode(ids, true));
  EXPECT_EQ(text.front(), ' ') << text;
  const Result plain = run("generate -q --prompt 'The river' -n 12");
  EXPECT_EQ(plain.out, text + "\n");
}

// Each failure: non-zero exit, nothing on stdout, and the message as the one "epwa: error: " line
// at the end of stderr (the loader may print its statistics block before it).
void expect_one_line_error(const std::string& args, const std::string& needle) {
  const Result r = run(args);
  EXPECT_NE(r.status, 0) << args;
  EXPECT_TRUE(r.out.empty()) << args << "\n" << r.out;
  const size_t at = r.err.find("epwa: error: ");
  ASSERT_NE(at, std::string::npos) << args << "\n" << r.err;
  EXPECT_TRUE(at == 0 || r.err[at - 1] == '\n') << r.err;
  const std::string line = r.err.substr(at);
  EXPECT_EQ(std::count(line.begin(), line.end(), '\n'), 1) << args << "\n" << r.err;
  EXPECT_EQ(line.back(), '\n');
  EXPECT_NE(line.find(needle), std::string::npos) << args << "\n" << r.err;
}

TEST(Cli, BadInputGivesOneLineErrors) {
  expect_one_line_error("generate --prompt hello --watermark gsg -n 2", "no watermark key");
  expect_one_line_error("generate --prompt '' --watermark none -n 2", "empty");
  expect_one_line_error("generate --prompt hi --watermark gsg --key k --expert-deltas 1,2 -n 2",
                        "expert-deltas");
  expect_one_line_error("generate --prompt hi --watermark xyz --key k", "watermark");
  expect_one_line_error("detect --key k --text ''", "empty");
  expect_one_line_error("detect --key k --method nope --text hello", "method");
  expect_one_line_error("detect --text hello", "no watermark key");
  expect_one_line_error("detect --key-file /nonexistent/epwa.key --text hello", "key file");
  expect_one_line_error("detect --key k --text hello --sample 5", "--sample is for --method cspv");
  expect_one_line_error("detect --key k", "--text");
  expect_one_line_error("detect --key k --tokens 1,x", "token id");
  expect_one_line_error("detect --key k --tokens 99999", "vocabulary");
  expect_one_line_error("detect --key k --router-layer 17 --text hello", "layer");
  expect_one_line_error("hash --model /nonexistent/model", "nonexistent");
}

}  // namespace
