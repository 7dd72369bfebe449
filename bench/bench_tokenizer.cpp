// Tokenizer throughput: encode and decode MB/s of the bundled training text, per tokenizer kind.
#include <benchmark/benchmark.h>

#include <fstream>

#include "epwa/tokenizer.hpp"

namespace {

const std::filesystem::path kDir = std::filesystem::path(__FILE__).parent_path().parent_path() /
                                   "tests/data/tokenizers";  // source tree

const std::string& text() {
  static const std::string t = [] {
    std::ifstream f(kDir / "train.txt", std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
  }();
  return t;
}

void encode(benchmark::State& st, const char* file) {
  auto tok = epwa::load_tokenizer(kDir / file);
  for (auto _ : st) benchmark::DoNotOptimize(tok->encode(text(), true, true));
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations() * text().size()));
}

void decode(benchmark::State& st, const char* file) {
  auto tok = epwa::load_tokenizer(kDir / file);
  const auto ids = tok->encode(text(), true, true);
  for (auto _ : st) benchmark::DoNotOptimize(tok->decode(ids));
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations() * text().size()));
}

BENCHMARK_CAPTURE(encode, sentencepiece, "llama_spm.model")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(encode, hf_llama_bpe, "llama_bpe_norm.json")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(encode, hf_gpt2_bytelevel, "gpt2_bl.json")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(encode, hf_qwen_bytelevel_nfc, "qwen_bl.json")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(decode, sentencepiece, "llama_spm.model")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(decode, hf_llama_bpe, "llama_bpe_norm.json")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(decode, hf_qwen_bytelevel, "qwen_bl.json")->Unit(benchmark::kMillisecond);

}  // namespace
