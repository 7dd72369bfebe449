// Model.trace: the logits and router decisions of every position as numpy arrays (`epwa trace`).
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstring>

#include "bindings.hpp"
#include "epwa/error.hpp"

namespace py = pybind11;

namespace epwa::python {
namespace {

// One MoE layer's router over the positions: E logits, the top-k experts and their weights.
struct LayerTrace {
  int32_t layer = 0;
  py::array_t<float> logits;
  py::array_t<int32_t> topk;
  py::array_t<float> weights;
};

struct Trace {
  std::vector<int32_t> tokens;
  py::array_t<float> logits;  // positions x vocabulary
  std::vector<LayerTrace> router;
};

// Rows of each MoE layer, placed by position.
struct Collector : RouterObserver {
  struct Rows {
    std::vector<float> logits, weights;
    std::vector<int32_t> topk;
  };
  size_t positions = 0, experts = 0, k = 0;
  std::vector<Rows> layers;
  void observe(const RouterObservation& o) override {
    if (layers.size() <= static_cast<size_t>(o.layer)) layers.resize(o.layer + 1);
    Rows& r = layers[o.layer];
    if (r.logits.empty()) {
      experts = o.logits.size(), k = o.topk.size();
      r.logits.resize(positions * experts), r.topk.resize(positions * k);
      r.weights.resize(positions * k);
    }
    check(o.logits.size() == experts && o.topk.size() == k && o.weights.size() == k &&
              o.position >= 0 && static_cast<size_t>(o.position) < positions,
          "trace: an observation does not fit the sequence");
    const size_t p = static_cast<size_t>(o.position);
    std::copy(o.logits.begin(), o.logits.end(), r.logits.begin() + p * experts);
    std::copy(o.topk.begin(), o.topk.end(), r.topk.begin() + p * k);
    std::copy(o.weights.begin(), o.weights.end(), r.weights.begin() + p * k);
  }
};

template <class T>
py::array_t<T> matrix(const std::vector<T>& v, size_t rows, size_t cols) {
  py::array_t<T> a({rows, cols});
  if (!v.empty()) std::memcpy(a.mutable_data(), v.data(), v.size() * sizeof(T));
  return a;
}

Trace trace(const LoadedModel& lm, py::handle input) {
  std::vector<int32_t> ids;
  if (py::isinstance<py::str>(input)) {
    // As `epwa trace --text`: BOS added, control tokens in the text parsed.
    const std::string text = input.cast<std::string>();
    py::gil_scoped_release free;
    ids = lm.need_tokenizer().encode(text);
  } else {
    ids = token_ids(input, "tokens");
  }
  check(!ids.empty(), "trace: no tokens");
  Collector col;
  std::vector<float> logits;
  {
    py::gil_scoped_release free;
    col.positions = ids.size();
    Context ctx = lm.model->make_context(static_cast<int64_t>(ids.size()));
    ForwardOptions fo;
    fo.observer = &col;
    fo.all_logits = true;
    logits = lm.model->forward(ids, ctx, fo);
  }
  Trace t;
  t.logits = matrix(logits, ids.size(), static_cast<size_t>(lm.model->config().vocab_size));
  for (size_t l = 0; l < col.layers.size(); ++l) {
    const Collector::Rows& r = col.layers[l];
    t.router.push_back({static_cast<int32_t>(l), matrix(r.logits, ids.size(), col.experts),
                        matrix(r.topk, ids.size(), col.k), matrix(r.weights, ids.size(), col.k)});
  }
  t.tokens = std::move(ids);
  return t;
}

}  // namespace

void bind_trace(py::module_& m, ModelClass& model) {
  py::class_<LayerTrace>(m, "LayerTrace", "One MoE layer's router over every position")
      .def_readonly("layer", &LayerTrace::layer, "MoE-layer index (0-based among MoE layers)")
      .def_readonly("logits", &LayerTrace::logits, "positions x experts router logits (float32)")
      .def_readonly("topk", &LayerTrace::topk, "positions x k chosen experts, best first (int32)")
      .def_readonly("weights", &LayerTrace::weights, "positions x k routing weights (float32)");
  py::class_<Trace>(m, "Trace", "What Model.trace returns")
      .def_readonly("tokens", &Trace::tokens)
      .def_readonly("logits", &Trace::logits, "positions x vocabulary logits (float32)")
      .def_readonly("router", &Trace::router, "one LayerTrace per MoE layer");
  model.def("trace", &trace, py::arg("tokens"),
            "Logits and router decisions of every position of `tokens` (ids, or a str tokenized "
            "with BOS as `epwa trace --text`)");
}

}  // namespace epwa::python
