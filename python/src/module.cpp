// The extension module _epwa; the package epwa (python/epwa/__init__.py) re-exports it.
#include "bindings.hpp"

PYBIND11_MODULE(_epwa, m) {
  using namespace epwa::python;
  m.doc() = "epwa: MoE inference with expert-pathway watermarking (EPW-A), detection";
  bind_errors(m);
  bind_tokenizer(m);
  ModelClass model = bind_model(m);
  bind_trace(m, model);
  bind_watermark(m);
  bind_generate(m, model);
  bind_detect(m);
  bind_json(m);
}
