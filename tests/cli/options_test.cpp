// Option values through the real binary: every bad value is one line that names the flag and says
// what is allowed in plain words; options that would be ignored are refused; --help shows every
// default; the sampler keeps special tokens out of the text.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>

#include "support/run_cli.hpp"

namespace {

// Exits 1 or 2 (not a signal) with one line holding `needle` and no long number.
void expect_error(const std::string& args, const std::string& needle) {
  const auto r = epwa_test::run_cli(args);
  EXPECT_TRUE(r.code == 1 || r.code == 2) << args << " exited " << r.code << ": " << r.out;
  EXPECT_NE(r.out.find(needle), std::string::npos) << args << ": " << r.out;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << args << ": " << r.out;
  EXPECT_LT(r.out.size(), 200u) << args << ": " << r.out;
}

TEST(Options, NumbersOutOfRangeNameTheFlagAndTheRange) {
  const std::string gen = "generate -q --prompt hi ";
  expect_error(gen + "-n -1", "--max-new-tokens: must be a whole number from 0 to 2147483647");
  expect_error(gen + "-n 3000000000", "--max-new-tokens: must be a whole number from 0 to");
  expect_error(gen + "--temperature -1", "--temperature: must be a number from 0 to 100, got '-1'");
  expect_error(gen + "--top-k -3", "--top-k: must be a whole number from 0 to 2147483647");
  expect_error(gen + "--top-p 1.5", "--top-p: must be a number above 0 and at most 1");
  for (const char* seed : {"-1", "18446744073709551616", "1e23", "0x10", "1.5", "' 7'"})
    expect_error(gen + "--seed " + seed,
                 "--seed: must be a whole number from 0 to 18446744073709551615");
  expect_error(gen + "--watermark gsg --key k --delta 1e30",
               "--delta: must be a number from 0 to 10000, got '1e30'");
  expect_error(gen + "--watermark gsg --key k --delta -1", "--delta: must be a number from 0");
  expect_error(gen + "--watermark ewp --key k --expert-deltas 1,2,3,4,5,6,7,1e30",
               "--expert-deltas: each value must be a number from 0 to 10000");
  expect_error("detect -q --key k --text hi --gamma 2",
               "--gamma: must be a number above 0 and below 1");
  expect_error("detect -q --key k --text hi --threshold nan", "--threshold: must be a number from");
  expect_error("detect -q --key k --text hi --method cspv --sample 0",
               "--sample: must be a whole number of at least 1");
  expect_error("detect -q --key k --text hi --router-layer 1.5",
               "--router-layer: must be a whole number");
}

TEST(Options, RepeatedOrEmptyValues) {
  expect_error("generate -q --prompt hi -n 2 -n 3",
               "--max-new-tokens is given 2 times: give it once");
  expect_error("generate -q --prompt hi --model '' -n 1", "--model: must not be empty");
  expect_error("detect -q --key '' --text hi", "--key: must not be empty");
}

TEST(Options, WatermarkOptionsThatWouldBeIgnored) {
  for (const char* flag : {"--key k", "--delta 3", "--gamma 0.25", "--router-layer 0"})
    expect_error(std::string("generate -q --prompt hi -n 1 ") + flag,
                 "is a watermark option, but --watermark is none");
  expect_error(
      "generate -q --prompt hi -n 1 --watermark gsg --key k --expert-deltas 1,1,1,1,1,1,1,1",
      "--expert-deltas is for --watermark ewp");
  expect_error("detect -q --key k --text hi --sample 5", "--sample is for --method cspv");
}

// pepi-eval checks its inputs and its output before the long run: an empty set (the sets cycle
// through their lines) and an output it could not write or that is one of its inputs.
TEST(Options, PepiEvalChecksInputsAndOutputFirst) {
  const std::string src = EPWA_SOURCE_DIR;
  const std::string cmd = "pepi-eval -q --oracle " + src + "/models/epwa-tiny-moe.oracle ";
  const std::string prompts = src + "/data/heldout/prompts.txt";
  expect_error(cmd + "--prompts /dev/null", "--prompts file '/dev/null' has no text");
  expect_error(cmd + "--human /dev/null", "--human file '/dev/null' has no text");
  expect_error(cmd + "--json /nonexistent-dir/out.json",
               "--json '/nonexistent-dir/out.json' cannot be written");
  expect_error(cmd + "--json " + prompts, "give another output path");
}

// attack steal's --json-out is checked before the run: not one of its inputs nor inside the model
// folder (writing it would destroy that input; options not given are no inputs), and writable.
TEST(Options, StealChecksItsOutputFirst) {
  const std::string src = EPWA_SOURCE_DIR;
  const std::string prompts = src + "/data/heldout/steal_prompts.txt";
  const std::string cmd = "attack steal -q --prompts " + prompts + " --observed 1000 ";
  expect_error(cmd + "--json-out " + prompts, "give another output path");
  expect_error(cmd + "--attacker-oracle " + src + "/models/epwa-tiny-moe.oracle --json-out " + src +
                   "/models/epwa-tiny-moe.oracle",
               "give another output path");
  expect_error(cmd + "--json-out " + src + "/models/epwa-tiny-moe/config.json",
               "is inside the input folder");
  expect_error(cmd + "--json-out /nonexistent-dir/out.json",
               "--json-out '/nonexistent-dir/out.json' cannot be written");
}

TEST(Options, HelpShowsEveryDefault) {
  const std::string gen = epwa_test::run_cli("generate --help").out;
  for (const char* d :
       {"--max-new-tokens INT:0 to 2147483647=32", "--temperature FLOAT:from 0 to 100=0",
        "--delta FLOAT:from 0 to 10000=2", "--gamma FLOAT:above 0 and below 1=0.5", "--seed UINT=0",
        "--top-p FLOAT:above 0 and at most 1=1", "--watermark TEXT:{gsg,ewp,exp,none}=none",
        "generation_config.json is not read"})
    EXPECT_NE(gen.find(d), std::string::npos) << d << "\n" << gen;
  const std::string det = epwa_test::run_cli("detect --help").out;
  for (const char* d :
       {"--sample INT:>= 1=64", "--threshold FLOAT:from -100 to 100=4",
        "--gamma FLOAT:above 0 and below 1=0.5", "--method TEXT:{full,cspv,weighted,pepi}=full"})
    EXPECT_NE(det.find(d), std::string::npos) << d << "\n" << det;
}

// At a high temperature the bundled model samples <unk> at token 106 with seed 1 (before the fix);
// special tokens are now kept out unless --allow-special-tokens.
TEST(Options, SamplerKeepsSpecialTokensOut) {
  for (const char* seed : {"1", "2"}) {
    const auto r = epwa_test::run_cli(
        std::string("generate -q --prompt 'The river' --temperature 50 -n 300 --json --seed ") +
            seed,
        epwa_test::Stderr::Drop);
    ASSERT_EQ(r.code, 0);
    const auto j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j["text"].get<std::string>().find("<unk>"), std::string::npos) << seed;
    for (int32_t t : j["tokens"]) EXPECT_GT(t, 1) << seed;  // 0 <unk>, 1 <s>
  }
}

}  // namespace

namespace {

// Peak resident memory (KiB) of the command line `args`, run in a forked child so that no earlier
// test's processes count.
long peak_rss_kib(const std::string& args, int* code) {
  int fd[2];
  if (pipe(fd) != 0) return -1;
  const pid_t pid = fork();
  if (pid == 0) {
    close(fd[0]);
    const int status =
        std::system((std::string(EPWA_BINARY) + " " + args + " >/dev/null 2>&1").c_str());
    rusage ru{};
    getrusage(RUSAGE_CHILDREN, &ru);
    const long out[2] = {ru.ru_maxrss, WIFEXITED(status) ? WEXITSTATUS(status) : 128};
    (void)!write(fd[1], out, sizeof out);
    _exit(0);
  }
  close(fd[1]);
  long in[2] = {-1, -1};
  (void)!read(fd[0], in, sizeof in);
  close(fd[0]);
  waitpid(pid, nullptr, 0);
  *code = static_cast<int>(in[1]);
  return in[0];
}

// -n reserves nothing up front and is capped at the model's context (1024 tokens for the bundled
// model): -n 2147483647 ended in std::bad_alloc, -n 100000 used ~380 MB for a short text.
TEST(Options, MaxNewTokensReservesNothingUpFront) {
  const auto r = epwa_test::run_cli("generate -q --prompt 'The river' -n 2147483647 --json");
  ASSERT_EQ(r.code, 0) << r.out.substr(0, 300);
  EXPECT_NE(r.out.find("Note: at most 1021 new tokens (--max-new-tokens 2147483647)"),
            std::string::npos)
      << r.out.substr(0, 300);
  int code = -1;
  const long kib = peak_rss_kib("generate -q --prompt 'The river' -n 100000", &code);
  EXPECT_EQ(code, 0);
  EXPECT_GT(kib, 0);
  EXPECT_LT(kib, 150 * 1024) << "peak RSS " << kib << " KiB";
}

}  // namespace
