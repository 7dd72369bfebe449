// Loads a model in 4 bits with the library and generates a few tokens greedily:
//   build/examples/load_4bit [model-path] [prompt]
#include <chrono>
#include <cstdio>
#include <exception>
#include <string>

#include "epwa/generate.hpp"
#include "epwa/load_options.hpp"
#include "epwa/model.hpp"
#include "epwa/tokenizer.hpp"

int main(int argc, char** argv) {
  try {
    const std::string path = argc > 1 ? argv[1] : EPWA_SOURCE_DIR "/models/epwa-tiny-moe";
    const std::string prompt = argc > 2 ? argv[2] : "The old house stood";
    epwa::LoadOptions opt;
    opt.mode = epwa::LoadMode::Bits4;
    epwa::LoadReport report;
    const auto t0 = std::chrono::steady_clock::now();
    auto model = epwa::Model::load(path, opt, &report);
    auto tok = epwa::load_tokenizer(path);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("loaded %s as %s in %.2f s: %.1f MB of weights\n", path.c_str(),
                report.effective.c_str(), s, report.weight_bytes / 1e6);
    epwa::GenerateOptions g;
    g.max_new_tokens = 24;
    g.stop_tokens = {model->config().eos_token_id};
    const auto ids = tok->encode(prompt, true);
    const auto out = epwa::generate(*model, ids, g);
    std::printf("%s%s\n", prompt.c_str(), tok->decode(out).c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "load_4bit: error: %s\n", e.what());
    return 1;
  }
}
