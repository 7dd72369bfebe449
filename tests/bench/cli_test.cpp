// `epwa bench` and `epwa quantize --type q4_k_m` through the command line.
#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <string>

#include "epwa/gguf.hpp"
#include "fixture.hpp"
#include "support/run_cli.hpp"

namespace {

using Result = epwa_test::CliResult;
Result run(const std::string& args, bool merge_stderr = true) {
  return epwa_test::run_cli(args,
                            merge_stderr ? epwa_test::Stderr::Merge : epwa_test::Stderr::Drop);
}

void expect_error(const std::string& args, const std::string& needle) {
  const Result r = run(args);
  EXPECT_TRUE(r.code == 1 || r.code == 2) << args << " exited " << r.code << ": " << r.out;
  EXPECT_NE(r.out.find(needle), std::string::npos) << args << ": " << r.out;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << args << ": " << r.out;
}

}  // namespace

TEST(BenchCli, RejectsBadLists) {
  const std::string m = "bench -q --model " + bench_test::tiny_f16().string();
  expect_error(m + " -p 8,x", "-p: invalid length 'x'");
  expect_error(m + " -p 8,,16", "-p: invalid length ''");
  expect_error(m + " -n 4,-4", "-n: invalid length '-4'");
  expect_error(m + " -p 8,0", "-p: length 0");
  expect_error(m + " -r 0", "-r: repetitions must be at least 1");
  expect_error(m + " --watermark blue", "--watermark");
  expect_error(m + " -p 0 -n 0", "no test given");
}

TEST(BenchCli, JsonRun) {
  const Result r = run("bench -q --json --model " + bench_test::tiny_f16().string() +
                           " -p 8 -n 4 -r 2 --probe-mib 8 --detect --watermark ewp -t 2",
                       false);
  ASSERT_EQ(r.code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["threads"], 2);
  EXPECT_EQ(j["watermark"], "ewp");
  ASSERT_EQ(j["tests"].size(), 4u);  // pp8, tg4 plain, tg4 +ewp, det8
  for (const auto& t : j["tests"]) {
    EXPECT_GT(t["tokens_per_s"].get<double>(), 0.0);
    EXPECT_GE(t["stddev"].get<double>(), 0.0);
    EXPECT_EQ(t["seconds"].size(), 2u);
  }
  EXPECT_TRUE(j.contains("load"));
  EXPECT_FALSE(j["commit"].get<std::string>().empty());
}

TEST(BenchCli, QuantizeQ4KM) {
  const auto out = bench_test::temp_dir() / "cli-k8-q4_k_m.gguf";
  const Result r = run("quantize -q --model " + bench_test::ksize_f16(8).string() +
                       " --type q4_k_m -o " + out.string());
  ASSERT_EQ(r.code, 0) << r.out;
  epwa::GgufFile f(out);
  EXPECT_EQ(f.get_u32("general.file_type"), 15u);
  EXPECT_EQ(f.find_tensor("blk.3.ffn_down_exps.weight")->dtype, epwa::DType::Q6_K);
  EXPECT_EQ(f.find_tensor("blk.0.ffn_down_exps.weight")->dtype, epwa::DType::Q4_K);
}
