#include <unordered_map>

#include "epwa/arch.hpp"
#include "epwa/error.hpp"
#include "epwa/export.hpp"
#include "epwa/platform.hpp"
#include "epwa/safetensors.hpp"
#include "loaders.hpp"

namespace epwa {

void convert_hf_to_gguf(const std::filesystem::path& hf_dir, const std::filesystem::path& out,
                        GgufExportOptions o) {
  const ModelConfig c = read_hf_config(hf_dir / "config.json");
  const SafetensorsModel st(hf_dir);
  // The tensors the family cuts from its own layout (GPT-OSS's stacked experts), the rest by name.
  const Architecture& arch = architecture(c.family);
  DerivedTensors derived;
  if (arch.derive_hf) derived = arch.derive_hf(c, st);
  derived = merged(std::move(derived), dequantize_fp8(st, hf_dir / "config.json", c));
  std::unordered_map<std::string, const TensorView*> by_name;
  for (const auto& [name, view] : derived.views) by_name.emplace(name, &view);
  auto get = [&](const std::string& name) -> const TensorView& {
    const auto it = by_name.find(name);
    return it != by_name.end() ? *it->second : st.get(name);
  };
  HfTensorReader reader;
  reader.type = [&](const std::string& name) { return get(name).dtype; };
  reader.read = [&](const std::string& name, std::vector<std::byte>& bytes) {
    const TensorView& t = get(name);
    bytes.assign(t.data.begin(), t.data.end());
  };
  if (o.name == "epwa") o.name = path_to_utf8(hf_dir.filename());
  write_model_gguf(c, reader, o, out);
}

}  // namespace epwa
