// epwa make-model: write a random-weight model of a named shape (fixtures, benchmarks).
#include "epwa/make_model.hpp"

#include <fmt/core.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "command.hpp"
#include "common.hpp"
#include "epwa/error.hpp"
#include "epwa/platform.hpp"
#include "progress.hpp"

namespace epwa::cli {
namespace {

struct Args {
  std::string shape, config, out, type = "f32";
  int32_t layers = 0;
  uint64_t seed = 0;
};

const Command kMakeModel{
    "make-model", "Write a random model (HF folder, or GGUF when OUT ends in .gguf)",
    [](CLI::App& app) {
      auto a = std::make_shared<Args>();
      std::string shapes;
      for (const auto& s : shape_names()) shapes += (shapes.empty() ? "" : ", ") + s;
      auto* shape = app.add_option("--shape", a->shape, "named shape: " + shapes);
      auto* cfg = app.add_option("--config", a->config, "a HF config.json giving the shape");
      shape->excludes(cfg);
      app.add_option("--layers", a->layers, "override the number of layers")
          ->check(real_number({.lo = 0, .lo_open = true}));
      app.add_option("--seed", a->seed, "random seed");
      app.add_option("--type", a->type,
                     "weight type: f32, f16 or bf16; for a GGUF file also q8_0, q4_0, q4_k, q5_k, "
                     "q6_k (matrices quantized as written, norms f32)")
          ->check(CLI::IsMember({"f32", "f16", "bf16", "q8_0", "q4_0", "q4_k", "q5_k", "q6_k"}));
      app.add_option("--out", a->out, "output folder (HF) or file ending in .gguf")->required();
      return [a] {
        check(!a->shape.empty() || !a->config.empty(), "make-model needs --shape or --config");
        ModelConfig c = a->shape.empty() ? read_hf_config(path_from_utf8(a->config))
                                         : shape_config(a->shape, a->layers);
        if (a->layers > 0) c.num_layers = a->layers;
        const DType t = dtype_from_name(a->type);
        const std::filesystem::path out = path_from_utf8(a->out);
        if (out.extension() == ".gguf") {
          TerminalProgress progress("writing", false);
          write_random_gguf(c, a->seed, t, out, [&](int64_t done, int64_t total) {
            progress.update(done, total, " tensors");
          });
          progress.finish();
        } else {
          check(t == DType::F32 || t == DType::F16 || t == DType::BF16,
                "make-model: --type " + a->type + " is for GGUF files (an OUT ending in .gguf)");
          write_random_hf(c, a->seed, t, out);
        }
        fmt::print(stderr, "wrote {} ({} parameters)\n", path_to_utf8(out), c.parameter_count());
        return 0;
      };
    }};

}  // namespace
}  // namespace epwa::cli
