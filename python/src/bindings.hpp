// What the binding files of the Python module _epwa share: the loaded model as Python holds it,
// conversions of Python arguments, and one bind function per topic (module.cpp calls them).
#pragma once
#include <pybind11/pybind11.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "epwa/load_options.hpp"
#include "epwa/model.hpp"
#include "epwa/tokenizer.hpp"

namespace epwa::python {

// A model with what the CLI loads beside it: its tokenizer (when one loads) and its router hash,
// computed once. Immutable after loading, so every Python thread may use it at once; each call
// makes its own Context.
struct LoadedModel {
  std::shared_ptr<Model> model;
  std::shared_ptr<Tokenizer> tokenizer;  // null when none loads
  std::string tokenizer_error;           // why not
  std::string router_hash;
  std::filesystem::path path;
  LoadReport report;

  // Throws Error when the model has no tokenizer (text in or out needs one).
  const Tokenizer& need_tokenizer() const;
};

using ModelClass = pybind11::class_<LoadedModel, std::shared_ptr<LoadedModel>>;

// Token ids from a Python sequence of ints (a list, a tuple, a numpy array); throws TypeError
// naming `what` for anything else (a str, floats, ints beyond 32 bits).
std::vector<int32_t> token_ids(pybind11::handle h, const char* what);
// nlohmann JSON as Python objects (dict, list, str, int, float, bool, None).
pybind11::object to_python(const nlohmann::json& j);
// Python's JSON-like values (None, bool, int, float, str, dict with str keys, list, tuple) to JSON;
// TypeError or ValueError for others.
nlohmann::json from_python(pybind11::handle h, int depth = 0);
void bind_json(pybind11::module_& m);

void bind_errors(pybind11::module_& m);
void bind_tokenizer(pybind11::module_& m);
ModelClass bind_model(pybind11::module_& m);
void bind_trace(pybind11::module_& m, ModelClass& model);
void bind_watermark(pybind11::module_& m);
void bind_generate(pybind11::module_& m, ModelClass& model);
void bind_detect(pybind11::module_& m);

}  // namespace epwa::python
