// Every command on every model family, through the command line: a random model of each family
// (make-model), converted to GGUF, quantized (q8_0, q4_k_m), loaded in 4-bit, traced, generated
// with the watermark, detected with every gray-box method, hashed; the same results from the HF
// folder and its GGUF.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "support/run_cli.hpp"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

json run_json(const std::string& args) {
  const auto r = epwa_test::run_cli(args, epwa_test::Stderr::Drop);
  EXPECT_EQ(r.code, 0) << args;
  return r.code == 0 ? json::parse(r.out) : json();
}

// `epwa detect`, which exits 0 when the text is watermarked and 1 when it is not: either way it
// was scored.
json run_detect(const std::string& args) {
  const auto r = epwa_test::run_cli(args, epwa_test::Stderr::Drop);
  EXPECT_TRUE(r.code == 0 || r.code == 1) << args << " exited " << r.code;
  return r.code == 0 || r.code == 1 ? json::parse(r.out) : json();
}

std::string join(const json& ids) {
  std::string s;
  for (const auto& t : ids) s += (s.empty() ? "" : ",") + std::to_string(t.get<int>());
  return s;
}

class Families : public ::testing::TestWithParam<std::string> {};

TEST_P(Families, EveryCommand) {
  const fs::path dir =
      fs::temp_directory_path() / ("epwa-family-" + GetParam() + "-" + std::to_string(getpid()));
  fs::remove_all(dir);
  const std::string hf = (dir / "hf").string(), gguf = (dir / "m.gguf").string();
  ASSERT_EQ(
      epwa_test::run_cli("make-model --shape tiny-" + GetParam() + " --seed 3 --out " + hf).code,
      0);
  ASSERT_EQ(epwa_test::run_cli("convert --model " + hf + " --out " + gguf).code, 0);
  for (const char* type : {"q8_0", "q4_k_m"})
    ASSERT_EQ(epwa_test::run_cli("quantize --quiet --model " + gguf + " --type " + type + " -o " +
                                 (dir / (std::string(type) + ".gguf")).string())
                  .code,
              0)
        << type;

  // The same trace from the folder and from its GGUF (f32 weights: identical values).
  const std::string toks = "1,17,4,200,42,42,9";
  const json a = run_json("trace --json --model " + hf + " --tokens " + toks);
  const json b = run_json("trace --json --model " + gguf + " --tokens " + toks);
  EXPECT_EQ(a["logits"], b["logits"]);
  EXPECT_EQ(a["router"], b["router"]);
  EXPECT_FALSE(run_json("trace --json --load-in-4bit --model " + hf + " --tokens " + toks)["logits"]
                   .empty());
  EXPECT_FALSE(run_json("trace --json --model " + (dir / "q4_k_m.gguf").string() + " --tokens " +
                        toks)["logits"]
                   .empty());

  // The router hash is a property of the model, whatever the file or mode.
  const auto hash = epwa_test::run_cli("hash --model " + hf, epwa_test::Stderr::Drop).out;
  EXPECT_EQ(
      epwa_test::run_cli("hash --model " + (dir / "q8_0.gguf").string(), epwa_test::Stderr::Drop)
          .out,
      hash);

  // Watermarked generation is detected by every gray-box method at the last and the first MoE
  // layer.
  for (const char* layer : {"-1", "0"}) {
    const json g = run_json("generate --json --model " + gguf +
                            " --prompt-tokens 1,5,9 -n 120 --seed 4 --key k " +
                            "--watermark gsg --delta 6 --router-layer " + layer);
    const std::string ids = join(g["tokens"]);
    // A random model's text repeats itself: every position counts here (--count-repeats), so
    // that the test sees the watermark rather than the length of the deduplicated text.
    for (const char* method : {"full", "weighted", "cspv --sample 30"}) {
      const json d = run_detect("detect --json --count-repeats --model " + hf +
                                " --key k --prompt-tokens 1,5,9 --tokens " + ids +
                                " --router-layer " + layer + " --method " + method);
      EXPECT_GT(d["z"].get<double>(), 4.0) << GetParam() << " layer " << layer << " " << method;
    }
    const json none =
        run_detect("detect --json --model " + hf + " --key other --prompt-tokens 1,5,9 --tokens " +
                   ids + " --router-layer " + layer);
    EXPECT_LT(none["z"].get<double>(), 4.0) << "a wrong key";
  }
  fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(All, Families,
                         ::testing::Values("qwen2moe", "olmoe", "qwen3moe", "deepseek"));

}  // namespace

namespace {

// The commands that read text, on each family: a random model of the family with the bundled
// model's tokenizer (vocabulary 8000) generates watermarked text from a prompt, detects it from the
// text, trains a PEPI oracle on a corpus slice and detects with it, and runs a small `epwa eval`.
class FamiliesText : public ::testing::TestWithParam<std::string> {};

TEST_P(FamiliesText, TextCommands) {
  const fs::path dir = fs::temp_directory_path() /
                       ("epwa-family-text-" + GetParam() + "-" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const fs::path bundle = fs::path(EPWA_SOURCE_DIR) / "models" / "epwa-tiny-moe";
  const std::string model = (dir / "m").string();
  ASSERT_EQ(
      epwa_test::run_cli("make-model --shape tiny-" + GetParam() + " --seed 5 --out " + model).code,
      0);
  {  // the bundled tokenizer's vocabulary
    json c = json::parse(std::ifstream(dir / "m" / "config.json"));
    c["vocab_size"] = 8000;
    std::ofstream(dir / "m" / "config.json") << c.dump(2);
  }
  ASSERT_EQ(epwa_test::run_cli("make-model --config " + (dir / "m" / "config.json").string() +
                               " --seed 5 --out " + (dir / "m8k").string())
                .code,
            0);
  for (const char* f : {"tokenizer.model", "tokenizer_config.json"})
    fs::copy_file(bundle / f, dir / "m8k" / f);
  const std::string m = (dir / "m8k").string();

  const auto gen =
      epwa_test::run_cli("generate --model " + m + " --prompt \"The old house\" -n 120 --seed 2 " +
                             "--watermark gsg --key k --delta 4",
                         epwa_test::Stderr::Drop);
  ASSERT_EQ(gen.code, 0);
  const std::string text = gen.out.substr(0, gen.out.find_last_not_of('\n') + 1);
  const std::string quoted =
      "'" + text.substr(0, text.find('\'')) + "'";  // the shell quote, cut at a quote
  const json full = run_detect("detect --json --model " + m +
                               " --key k --prompt \"The old house\" --text " + quoted);
  EXPECT_GT(full["n"].get<int>(), 10);

  const std::string corpus =
      (fs::path(EPWA_SOURCE_DIR) / "data" / "heldout" / "heldout.txt").string();
  const std::string oracle = (dir / "o.oracle").string();
  ASSERT_EQ(epwa_test::run_cli("train-oracle -q --model " + m + " --corpus " + corpus +
                               " --max-positions 3000 --out " + oracle)
                .code,
            0);
  const json pepi = run_detect("detect --json --model " + m + " --key k --method pepi --oracle " +
                               oracle + " --prompt \"The old house\" --text " + quoted);
  // The same text, the experts predicted instead of read (so the deduplicated (expert, token)
  // pairs, and n, may differ).
  EXPECT_EQ(pepi["text_tokens"], full["text_tokens"]);
  EXPECT_GT(pepi["n"].get<int>(), 10);

  const std::string out = (dir / "eval").string();
  ASSERT_EQ(epwa_test::run_cli("eval --model " + m +
                               " --key k --n 3 --n-human 3 --tokens 30 --attack-texts 1 " +
                               "--deltas 2 --delta-texts 1 --cross-texts 1 --out " + out)
                .code,
            0);
  EXPECT_TRUE(fs::exists(fs::path(out) / "results.json"));
  EXPECT_TRUE(fs::exists(fs::path(out) / "report.html"));
  fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(All, FamiliesText,
                         ::testing::Values("qwen2moe", "olmoe", "qwen3moe", "deepseek"));

}  // namespace
