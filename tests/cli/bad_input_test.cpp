// Bad input through the command line: a one-line error naming the problem and a non-zero exit,
// never a crash.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "support/run_cli.hpp"

namespace fs = std::filesystem;

namespace {

using Result = epwa_test::CliResult;
Result run(const std::string& args) {
  return epwa_test::run_cli(args);
}

// Exits with 1 or 2 (not a signal) and prints exactly one line mentioning `needle`.
void expect_error(const std::string& args, const std::string& needle) {
  const Result r = run(args);
  EXPECT_TRUE(r.code == 1 || r.code == 2) << args << " exited " << r.code << ": " << r.out;
  EXPECT_NE(r.out.find(needle), std::string::npos) << args << ": " << r.out;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << args << ": " << r.out;
}

const fs::path kRef = fs::path(EPWA_TEST_DATA_DIR) / "ref" / "gqa";

fs::path temp_dir(const std::string& name) {
  const fs::path d = fs::temp_directory_path() / ("epwa-cli-" + name);
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

TEST(Cli, UnknownFlagAndMissingArguments) {
  expect_error("trace --tokens 1 --bogus", "bogus");
  expect_error("trace", "--tokens");
  expect_error("frobnicate", "frobnicate");
}

TEST(Cli, MissingModel) {
  expect_error("info --model /nonexistent/model", "model not found: /nonexistent/model");
}

TEST(Cli, BadTokens) {
  expect_error("trace --quiet --model " + kRef.string() + " --tokens 1,99999",
               "token id 99999 out of range");
  expect_error("trace --quiet --model " + kRef.string() + " --tokens 1,x", "invalid token id 'x'");
  expect_error("trace --quiet --model " + kRef.string() + " --tokens 1,-4",
               "token id -4 out of range");
}

TEST(Cli, TruncatedSafetensors) {
  const fs::path d = temp_dir("truncated");
  fs::copy_file(kRef / "config.json", d / "config.json");
  std::ifstream in(kRef / "model.safetensors", std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  std::ofstream(d / "model.safetensors", std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  expect_error("info --model " + d.string(), "model.safetensors");
}

TEST(Cli, ShapeMismatch) {
  const fs::path d = temp_dir("shape");
  fs::copy_file(kRef / "model.safetensors", d / "model.safetensors");
  nlohmann::json c = nlohmann::json::parse(std::ifstream(kRef / "config.json"));
  c["intermediate_size"] = 100;
  std::ofstream(d / "config.json") << c.dump();
  expect_error("trace --tokens 1 --model " + d.string(), "expected [100, 64]");
}

TEST(Cli, MissingConfig) {
  const fs::path d = temp_dir("noconfig");
  fs::copy_file(kRef / "model.safetensors", d / "model.safetensors");
  expect_error("info --model " + d.string(), "config.json");
}

TEST(Cli, CorruptGguf) {
  const fs::path d = temp_dir("gguf");
  const fs::path good = d / "good.gguf";
  ASSERT_EQ(run("convert --model " + kRef.string() + " --out " + good.string()).code, 0);
  std::ifstream in(good, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  std::ofstream(d / "cut.gguf", std::ios::binary) << bytes.substr(0, bytes.size() - 1000);
  expect_error("info --model " + (d / "cut.gguf").string(), "cut.gguf");
  bytes[0] = 'X';
  std::ofstream(d / "magic.gguf", std::ios::binary) << bytes;
  expect_error("info --model " + (d / "magic.gguf").string(), "magic");
}

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

// An output that is an input (or inside an input folder) is refused, before anything is written.
TEST(Cli, OutputThatIsAnInput) {
  const fs::path d = temp_dir("outin");
  fs::copy(kRef, d / "hf");
  const std::string hf = (d / "hf").string(), gguf = (d / "m.gguf").string();
  expect_error("convert --model " + hf + " --out " + hf, "is the input");
  expect_error("convert --model " + hf + " --out " + hf + "/sub/../m.gguf",
               "inside the input folder");
  EXPECT_EQ(slurp(d / "hf" / "model.safetensors"), slurp(kRef / "model.safetensors"));
  EXPECT_TRUE(fs::is_regular_file(d / "hf" / "config.json"));
  ASSERT_EQ(run("convert --model " + hf + " --out " + gguf).code, 0);
  const std::string before = slurp(gguf);
  expect_error("quantize -q --model " + gguf + " --type q8_0 -o " + (d / "." / "m.gguf").string(),
               "is the input");
  expect_error("quantize -q --model " + hf + " --type q8_0 -o " + hf + "/q.gguf",
               "inside the input folder");
  EXPECT_EQ(slurp(gguf), before);
}

// A conversion that fails half way leaves the existing output as it was, and no temporary.
TEST(Cli, FailedWriteKeepsTheOldOutput) {
  const fs::path d = temp_dir("failwrite");
  fs::copy_file(kRef / "model.safetensors", d / "model.safetensors");
  nlohmann::json c = nlohmann::json::parse(std::ifstream(kRef / "config.json"));
  c["intermediate_size"] = 100;  // found only while the tensors are written
  std::ofstream(d / "config.json") << c.dump();
  const fs::path out = temp_dir("failwrite-out") / "m.gguf";
  std::ofstream(out) << "precious";
  expect_error("convert --model " + d.string() + " --out " + out.string(), "ffn_gate_exps");
  EXPECT_EQ(slurp(out), "precious");
  EXPECT_EQ(std::distance(fs::directory_iterator(out.parent_path()), fs::directory_iterator()), 1);
}

// A tensor's type edited in place (f32 -> f16): refused, naming the tensor, instead of loading
// garbage.
TEST(Cli, GgufWithAnEditedTensorType) {
  const fs::path d = temp_dir("edited");
  const fs::path good = d / "good.gguf";
  ASSERT_EQ(run("convert --model " + kRef.string() + " --out " + good.string()).code, 0);
  std::string bytes = slurp(good);
  const std::string name = "blk.0.attn_q.weight";
  const size_t at = bytes.find(name);
  ASSERT_NE(at, std::string::npos);
  uint32_t dims = 0, type = 0;
  std::memcpy(&dims, bytes.data() + at + name.size(), 4);
  const size_t type_at = at + name.size() + 4 + 8 * dims;
  std::memcpy(&type, bytes.data() + type_at, 4);
  ASSERT_EQ(type, 0u);  // f32
  type = 1;             // f16
  std::memcpy(bytes.data() + type_at, &type, 4);
  std::ofstream(d / "edited.gguf", std::ios::binary) << bytes;
  expect_error("trace --quiet --tokens 1,2 --model " + (d / "edited.gguf").string(),
               "tensor '" + name + "' (f16");
}

// Quantizing an already quantized model again is refused unless asked for (it compounds the
// rounding error); widening it to a float type is not re-quantizing.
TEST(Cli, RequantizeNeedsToBeAskedFor) {
  const fs::path d = temp_dir("requant");
  const std::string q8 = (d / "q8.gguf").string();
  ASSERT_EQ(run("quantize -q --model " + kRef.string() + " --type q8_0 -o " + q8).code, 0);
  const std::string again = "quantize -q --model " + q8 + " -o " + (d / "q4.gguf").string();
  expect_error(again + " --type q4_0", "is already quantized (q8_0 weights)");
  expect_error(again + " --type q4_k_m", "give --allow-requantize");
  EXPECT_FALSE(fs::exists(d / "q4.gguf"));
  const Result forced = run(again + " --type q4_0 --allow-requantize");
  EXPECT_EQ(forced.code, 0) << forced.out;
  EXPECT_NE(forced.out.find("Warning: re-quantizing q8_0 weights to q4_0"), std::string::npos);
  EXPECT_EQ(run(again + " --type f16").code, 0);
}

TEST(Cli, TraceJsonContract) {
  const Result r = run("trace --quiet --model " + kRef.string() + " --tokens 1,5,9 --json");
  ASSERT_EQ(r.code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["tokens"], nlohmann::json({1, 5, 9}));
  EXPECT_EQ(j["logits"].size(), 3u);
  EXPECT_EQ(j["logits"][0].size(), 320u);
  ASSERT_EQ(j["router"].size(), 2u);
  EXPECT_EQ(j["router"][1]["layer"], 1);
  EXPECT_EQ(j["router"][1]["logits"][2].size(), 4u);
  EXPECT_EQ(j["router"][1]["topk"][2].size(), 2u);
  EXPECT_EQ(j["router"][1]["weights"][2].size(), 2u);
}

TEST(Cli, GenerateJsonContract) {
  const Result r = run("generate --quiet --model " + kRef.string() +
                       " --prompt-tokens 1,5,9 -n 4 --temperature 0 --json");
  ASSERT_EQ(r.code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["prompt_tokens"], nlohmann::json({1, 5, 9}));
  EXPECT_EQ(j["tokens"].size(), 4u);
}

// --min-new-tokens: a text that sampling ends at once (EOS first, bundled model, seed 2) runs to
// the requested length without EOS; with --json-schema it is refused.
TEST(Cli, MinNewTokensHoldsEosBack) {
  const std::string base =
      "generate --quiet --prompt 'The end.' --temperature 1 --seed 2 -n 40 --json";
  const Result a = run(base);
  ASSERT_EQ(a.code, 0) << a.out;
  ASSERT_EQ(nlohmann::json::parse(a.out)["tokens"], nlohmann::json({2}));
  const Result b = run(base + " --min-new-tokens 40");
  ASSERT_EQ(b.code, 0) << b.out;
  const auto tokens = nlohmann::json::parse(b.out)["tokens"].get<std::vector<int32_t>>();
  EXPECT_EQ(tokens.size(), 40u);
  EXPECT_EQ(std::count(tokens.begin(), tokens.end(), 2), 0);
  expect_error(base + " --min-new-tokens 5 --json-schema " + kRef.string() + "/config.json",
               "--min-new-tokens and --json-schema exclude each other");
}

TEST(Cli, MakeModelRoundTrip) {
  const fs::path d = temp_dir("make");
  ASSERT_EQ(run("make-model --shape tiny --seed 3 --out " + (d / "hf").string()).code, 0);
  ASSERT_EQ(run("make-model --shape tiny --seed 3 --out " + (d / "m.gguf").string()).code, 0);
  const Result a = run("trace --quiet --model " + (d / "hf").string() + " --tokens 1,2,3 --json");
  const Result b =
      run("trace --quiet --model " + (d / "m.gguf").string() + " --tokens 1,2,3 --json");
  ASSERT_EQ(a.code, 0) << a.out;
  ASSERT_EQ(b.code, 0) << b.out;
  // Same seed, same weights: identical numbers from either format. The "load" block differs by
  // design (file format, timings), so it is left out of the comparison.
  auto ja = nlohmann::json::parse(a.out), jb = nlohmann::json::parse(b.out);
  ASSERT_TRUE(ja.contains("load"));
  ja.erase("load");
  jb.erase("load");
  EXPECT_EQ(ja, jb);
  expect_error("make-model --shape nosuch --out " + (d / "x").string(),
               "unknown model shape 'nosuch'");
}

}  // namespace

namespace {

// Text longer than the model's context (the bundled model: 1024 positions) is refused with the
// limit named, by every command that runs it, instead of scored at positions never trained on.
TEST(Cli, InputLongerThanTheContext) {
  const fs::path f = fs::temp_directory_path() / "epwa-long-input.txt";
  {
    std::ofstream out(f);
    for (int i = 0; i < 900; ++i) out << "the river flows " << i << ". ";
  }
  expect_error("detect -q --key k --file " + f.string(), "beyond the model's context of 1024");
  std::string ids = "1";
  for (int i = 0; i < 1100; ++i) ids += ",5";
  expect_error("generate -q --prompt-tokens " + ids + " -n 4",
               "beyond the model's context of 1024");
  expect_error("trace -q --tokens " + ids, "beyond the model's context of 1024");
  fs::remove(f);
}

}  // namespace
