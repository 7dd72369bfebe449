// epwa.Model: loads a model as the CLI does (path, $EPW_MODEL_PATH, the bundled model; loading
// modes), with its tokenizer and router hash; epwa.ModelConfig, its hyper-parameters.
#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include <cstdlib>
#include <optional>

#include "bindings.hpp"
#include "epwa/error.hpp"
#include "epwa/platform.hpp"
#include "epwa/session.hpp"
#include "epwa/thread_pool.hpp"

namespace py = pybind11;

namespace epwa::python {

const Tokenizer& LoadedModel::need_tokenizer() const {
  check(tokenizer != nullptr,
        "the model has no usable tokenizer (" + tokenizer_error + "): give token ids");
  return *tokenizer;
}

namespace {

// As tools/epwa's resolve_model_path: the bundled model when neither the argument nor
// $EPW_MODEL_PATH names one (resolve_load has read the variable).
std::filesystem::path model_path(const std::optional<std::string>& resolved) {
  if (resolved) return path_from_utf8(*resolved);
  return path_from_utf8(EPWA_SOURCE_DIR) / "models" / "epwa-tiny-moe";
}

std::shared_ptr<LoadedModel> load(std::optional<std::filesystem::path> path,
                                  std::optional<std::string> mode, std::optional<int> threads) {
  if (threads) {
    check(*threads >= 1 && *threads <= 1024,
          "threads must be from 1 to 1024, got " + std::to_string(*threads));
    // The kernels' pool is process-wide and reads EPWA_THREADS when it starts, at the first
    // kernel call (as `epwa bench -t`).
    setenv("EPWA_THREADS", std::to_string(*threads).c_str(), 1);
  }
  LoadFlags flags;
  flags.load = mode;  // None: the CLI's rules without a flag (EPW_* variables, else standard)
  if (path) {
    check(!path->empty(), "path is empty");
    flags.model = path_to_utf8(*path);
  }
  ResolvedLoad r = resolve_load(flags);
  std::vector<std::string> warnings = r.warnings;
  r.options.warn = [&warnings](const std::string& w) { warnings.push_back(w); };
  auto lm = std::make_shared<LoadedModel>();
  lm->path = model_path(r.model);
  {
    py::gil_scoped_release free;
    try {
      lm->tokenizer = load_tokenizer(lm->path);
    } catch (const std::exception& e) {
      lm->tokenizer_error = e.what();
    }
    lm->model = Model::load(lm->path, r.options, &lm->report);
    lm->router_hash = router_hash(*lm->model);
  }
  for (const std::string& w : warnings)
    if (PyErr_WarnEx(PyExc_UserWarning, w.c_str(), 1) != 0) throw py::error_already_set();
  if (threads)
    check(ThreadPool::global().size() == *threads,
          "threads: the thread pool already runs " + std::to_string(ThreadPool::global().size()) +
              " threads (it is process-wide, sized by the first model that computes)");
  return lm;
}

py::dict report_dict(const LoadedModel& lm) {
  const LoadReport& r = lm.report;
  py::dict d;
  d["mode"] = std::string(load_mode_name(r.requested));
  d["effective"] = r.effective;
  d["reason"] = r.reason;
  d["cpu"] = r.cpu;
  d["device"] = r.device;
  d["device_why"] = r.device_why;
  d["cache"] = r.cache;
  d["weight_bytes"] = r.weight_bytes;
  d["bytes_by_type"] = r.bytes_by_type;
  d["warnings"] = r.warnings;
  return d;
}

void bind_config(py::module_& m) {
  py::class_<ModelConfig>(m, "ModelConfig", "A model's hyper-parameters (include/epwa/config.hpp)")
      .def_readonly("architecture", &ModelConfig::architecture)
      .def_readonly("family", &ModelConfig::family)
      .def_readonly("vocab_size", &ModelConfig::vocab_size)
      .def_readonly("hidden_size", &ModelConfig::hidden_size)
      .def_readonly("intermediate_size", &ModelConfig::intermediate_size)
      .def_readonly("num_layers", &ModelConfig::num_layers)
      .def_readonly("num_heads", &ModelConfig::num_heads)
      .def_readonly("num_kv_heads", &ModelConfig::num_kv_heads)
      .def_readonly("head_dim", &ModelConfig::head_dim)
      .def_readonly("rope_theta", &ModelConfig::rope_theta)
      .def_readonly("rms_norm_eps", &ModelConfig::rms_norm_eps)
      .def_readonly("max_position_embeddings", &ModelConfig::max_position_embeddings)
      .def_readonly("tie_word_embeddings", &ModelConfig::tie_word_embeddings)
      .def_readonly("bos_token_id", &ModelConfig::bos_token_id)
      .def_readonly("eos_token_id", &ModelConfig::eos_token_id)
      .def_readonly("num_experts", &ModelConfig::num_experts)
      .def_readonly("experts_per_token", &ModelConfig::experts_per_token)
      .def_readonly("expert_intermediate_size", &ModelConfig::expert_intermediate_size)
      .def_readonly("shared_expert_intermediate_size",
                    &ModelConfig::shared_expert_intermediate_size)
      .def_readonly("norm_topk_prob", &ModelConfig::norm_topk_prob)
      .def_readonly("dense_layers", &ModelConfig::dense_layers)
      .def_property_readonly("moe_layers", &ModelConfig::moe_layers)
      .def_property_readonly("num_moe_layers", &ModelConfig::num_moe_layers)
      .def_property_readonly("router_rule", &ModelConfig::router_rule)
      .def_property_readonly("parameter_count", &ModelConfig::parameter_count)
      .def("__repr__", [](const ModelConfig& c) {
        return "<epwa.ModelConfig " + c.architecture + ", " + std::to_string(c.num_layers) +
               " layers, " + std::to_string(c.num_experts) + " experts, vocabulary " +
               std::to_string(c.vocab_size) + ">";
      });
}

}  // namespace

ModelClass bind_model(py::module_& m) {
  bind_config(m);
  ModelClass cls(m, "Model",
                 "A loaded MoE model, immutable: share one across threads (each call makes its own "
                 "context)");
  cls.def(py::init(&load), py::arg("path") = py::none(), py::arg("load") = "auto",
          py::arg("threads") = py::none(),
          "Loads a HuggingFace folder or .gguf file; path None: $EPW_MODEL_PATH, else the bundled "
          "model. load: standard, fast, 4bit, 8bit or auto (None: the EPW_* variables, else "
          "standard). threads sizes the process-wide kernel pool (None: $EPWA_THREADS or all "
          "cores).")
      .def_property_readonly(
          "config", [](const LoadedModel& lm) { return lm.model->config(); },
          "Hyper-parameters (a copy)")
      .def_property_readonly(
          "router_hash", [](const LoadedModel& lm) { return lm.router_hash; },
          "IRSH-v1 (Mixtral) or IRSH-v2 of the routers, 64 hex characters")
      .def_property_readonly(
          "tokenizer", [](const LoadedModel& lm) { return lm.tokenizer; },
          "The tokenizer found beside the model, or None")
      .def_property_readonly("path", [](const LoadedModel& lm) { return lm.path; })
      .def_property_readonly("format", [](const LoadedModel& lm) { return lm.model->format(); })
      .def_property_readonly("load_report", &report_dict,
                             "How the model was loaded (mode, effective precision, device, ...)")
      .def("__repr__", [](const LoadedModel& lm) {
        return "<epwa.Model " + path_to_utf8(lm.path) + " (" + lm.model->config().architecture +
               ")>";
      });
  return cls;
}

}  // namespace epwa::python
