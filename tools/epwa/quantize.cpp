// epwa quantize: write a model as a quantized GGUF in llama.cpp's conventions.
#include <fmt/core.h>

#include <chrono>
#include <filesystem>
#include <optional>

#include "command.hpp"
#include "common.hpp"
#include "epwa/error.hpp"
#include "epwa/export.hpp"
#include "epwa/files.hpp"
#include "epwa/load_options.hpp"
#include "epwa/platform.hpp"
#include "epwa/quant_preset.hpp"
#include "epwa/tokenizer.hpp"
#include "progress.hpp"

namespace epwa::cli {
namespace {

struct Args {
  ModelArgs model;
  std::string type;
  std::string out;
  bool allow_requantize = false;
};

const Command kQuantize{
    "quantize", "Write a quantized GGUF (q4_0, q8_0, q4_k, q5_k, q6_k, ...) that llama.cpp reads",
    [](CLI::App& app) {
      auto a = std::make_shared<Args>();
      a->model.add(app);
      app.add_option("--type", a->type,
                     "matrix type: q4_0, q4_1, q5_0, q5_1, q8_0, q4_k, q5_k, q6_k, mxfp4, f16, "
                     "bf16, f32, or the mixes q4_k_m and mxfp4_moe (llama.cpp's Q4_K_M and "
                     "MXFP4_MOE; docs/QUANT.md)")
          ->required();
      app.add_option("--out,-o", a->out, "output .gguf file")->required();
      app.add_flag("--allow-requantize", a->allow_requantize,
                   "quantize a model whose weights are already quantized (refused without it: "
                   "the rounding errors add up)");
      return [a] {
        const bool preset = is_quant_preset(a->type);
        const std::optional<DType> type =
            preset ? std::nullopt : std::optional(dtype_from_name(a->type));
        const auto t0 = std::chrono::steady_clock::now();
        check_output_not_input(path_from_utf8(a->out), {a->model.path()}, "--out");
        // The plain loader: the source as stored (mapped, on the CPU), never a quantized load
        // (standard mode quantizes Mixtral-scale models at load time).
        auto m = Model::load(a->model.path());
        // Re-quantizing compounds the rounding error, as llama-quantize's --allow-requantize
        // says; to a float type it only widens what is there.
        const bool to_blocks = preset || dtype_block_size(*type) > 1;
        if (const auto q = quantized_weight_types(*m); to_blocks && !q.empty()) {
          std::string types;
          for (const std::string& t : q) types += (types.empty() ? "" : ", ") + t;
          check(a->allow_requantize, path_to_utf8(a->model.path()) + " is already quantized (" +
                                         types + " weights): quantizing it again to " + a->type +
                                         " adds a second rounding error; quantize the float "
                                         "model instead, or give --allow-requantize");
          fmt::print(stderr, "Warning: re-quantizing {} weights to {}\n", types, a->type);
        }
        GgufExportOptions o;
        o.matrix_type = type;
        o.name = path_to_utf8(m->source().filename());
        // The tokenizer travels with the file, as llama.cpp expects.
        try {
          GgufVocab v = m->format() == "gguf" ? vocab_from_gguf(GgufFile(m->source()))
                                              : vocab_from_model_files(m->source());
          GgufWriter tmp;
          write_tokenizer_gguf_metadata(v, tmp);
          o.extra_metadata = tmp.metadata();
        } catch (const Error& e) {
          fmt::print(stderr, "Warning: no tokenizer written: {}\n", e.what());
        }
        std::vector<std::string> notes;
        TerminalProgress progress("quantizing", a->model.quiet);
        o.progress = [&](int64_t done, int64_t total) { progress.update(done, total, " tensors"); };
        write_via_temp(path_from_utf8(a->out), [&](const std::filesystem::path& tmp) {
          notes =
              preset ? save_model_gguf_preset(*m, a->type, o, tmp) : save_model_gguf(*m, o, tmp);
        });
        progress.finish();
        for (const std::string& note : notes) fmt::print(stderr, "Note: {}\n", note);
        const double s =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        fmt::print("wrote {} ({} matrices, {} bytes) in {:.2f} s\n", a->out, a->type,
                   std::filesystem::file_size(path_from_utf8(a->out)), s);
        return 0;
      };
    }};

}  // namespace
}  // namespace epwa::cli
