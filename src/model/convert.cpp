#include "epwa/error.hpp"
#include "epwa/export.hpp"
#include "epwa/platform.hpp"
#include "epwa/safetensors.hpp"

namespace epwa {

void convert_hf_to_gguf(const std::filesystem::path& hf_dir, const std::filesystem::path& out,
                        GgufExportOptions o) {
  const ModelConfig c = read_hf_config(hf_dir / "config.json");
  const SafetensorsModel st(hf_dir);
  HfTensorReader reader;
  reader.type = [&](const std::string& name) { return st.get(name).dtype; };
  reader.read = [&](const std::string& name, std::vector<std::byte>& bytes) {
    const TensorView& t = st.get(name);
    bytes.assign(t.data.begin(), t.data.end());
  };
  if (o.name == "epwa") o.name = path_to_utf8(hf_dir.filename());
  write_model_gguf(c, reader, o, out);
}

}  // namespace epwa
