// epwa convert: HuggingFace folder -> GGUF in llama.cpp's conventions.
#include <fmt/core.h>

#include "command.hpp"
#include "common.hpp"
#include "epwa/error.hpp"
#include "epwa/export.hpp"
#include "epwa/files.hpp"
#include "epwa/platform.hpp"
#include "epwa/tokenizer.hpp"
#include "progress.hpp"

namespace epwa::cli {
namespace {

const Command kConvert{
    "convert", "Convert a HuggingFace Mixtral folder to GGUF", [](CLI::App& app) {
      auto model = std::make_shared<std::string>();
      auto out = std::make_shared<std::string>();
      auto type = std::make_shared<std::string>("keep");
      app.add_option("--model", *model,
                     "HF folder (default: $EPW_MODEL_PATH, then the bundled model)");
      app.add_option("--out", *out, "output .gguf file")->required();
      app.add_option("--type", *type, "matrix type: keep (stored type), f32, f16 or bf16")
          ->check(CLI::IsMember({"keep", "f32", "f16", "bf16"}));
      return [=] {
        const auto in = resolve_model_path(*model);
        check(std::filesystem::is_directory(in),
              "convert needs a HuggingFace folder, got " + path_to_utf8(in));
        check_output_not_input(path_from_utf8(*out), {in}, "--out");
        GgufExportOptions o;
        if (*type != "keep") o.matrix_type = dtype_from_name(*type);
        // Embed the tokenizer as llama.cpp's converter does, so the file is complete on its own.
        if (std::filesystem::exists(in / "tokenizer.model") ||
            std::filesystem::exists(in / "tokenizer.json")) {
          GgufWriter meta;
          write_tokenizer_gguf_metadata(vocab_from_model_files(in), meta);
          o.extra_metadata = meta.metadata();
        }
        TerminalProgress progress("converting", false);
        o.progress = [&](int64_t done, int64_t total) { progress.update(done, total, " tensors"); };
        write_via_temp(path_from_utf8(*out),
                       [&](const std::filesystem::path& tmp) { convert_hf_to_gguf(in, tmp, o); });
        progress.finish();
        fmt::print(stderr, "wrote {}\n", *out);
        return 0;
      };
    }};

}  // namespace
}  // namespace epwa::cli
