// Python arguments to C++ values and JSON results to Python objects.
#include <pybind11/stl.h>

#include <nlohmann/json.hpp>

#include "bindings.hpp"

namespace py = pybind11;

namespace epwa::python {

std::vector<int32_t> token_ids(py::handle h, const char* what) {
  // pybind11's list caster takes any sequence but str and bytes, and each int only when it fits
  // 32 bits (numpy integers included).
  py::detail::make_caster<std::vector<int32_t>> caster;
  if (!caster.load(h, true))
    throw py::type_error(std::string(what) +
                         " must be a sequence of token ids (ints of 32 bits), got " +
                         std::string(py::str(py::type::handle_of(h).attr("__name__"))));
  return py::detail::cast_op<std::vector<int32_t>&&>(std::move(caster));
}

py::object to_python(const nlohmann::json& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::object: {
      py::dict d;
      for (const auto& [k, v] : j.items()) d[py::str(k)] = to_python(v);
      return d;
    }
    case nlohmann::json::value_t::array: {
      py::list l;
      for (const auto& v : j) l.append(to_python(v));
      return l;
    }
    case nlohmann::json::value_t::string:
      return py::str(j.get_ref<const std::string&>());
    case nlohmann::json::value_t::boolean:
      return py::bool_(j.get<bool>());
    case nlohmann::json::value_t::number_integer:
      return py::int_(j.get<int64_t>());
    case nlohmann::json::value_t::number_unsigned:
      return py::int_(j.get<uint64_t>());
    case nlohmann::json::value_t::number_float:
      return py::float_(j.get<double>());
    default:
      return py::none();
  }
}

namespace {

// A str's UTF-8; a lone surrogate raises Python's UnicodeEncodeError (nlohmann could not hold it).
std::string utf8_of(py::handle s) {
  Py_ssize_t n = 0;
  const char* p = PyUnicode_AsUTF8AndSize(s.ptr(), &n);
  if (p == nullptr) throw py::error_already_set();
  return std::string(p, static_cast<size_t>(n));
}

}  // namespace

nlohmann::json from_python(py::handle h, int depth) {
  if (depth > 512) throw py::value_error("JSON value nested too deeply");
  if (h.is_none()) return nullptr;
  if (py::isinstance<py::bool_>(h)) return h.cast<bool>();
  if (py::isinstance<py::int_>(h)) {
    // Ints as nlohmann keeps them: signed where they fit, else unsigned (64 bits at most).
    try {
      if (h.cast<py::int_>() < py::int_(0)) return h.cast<int64_t>();
      return h.cast<uint64_t>();
    } catch (const py::cast_error&) {
      throw py::value_error("an int beyond 64 bits cannot be written as JSON");
    }
  }
  if (py::isinstance<py::float_>(h)) return h.cast<double>();
  if (py::isinstance<py::str>(h)) return utf8_of(h);
  if (py::isinstance<py::dict>(h)) {
    nlohmann::json o = nlohmann::json::object();
    for (auto [k, v] : h.cast<py::dict>()) {
      if (!py::isinstance<py::str>(k)) throw py::type_error("JSON object keys must be str");
      o[utf8_of(k)] = from_python(v, depth + 1);
    }
    return o;
  }
  if (py::isinstance<py::list>(h) || py::isinstance<py::tuple>(h)) {
    nlohmann::json a = nlohmann::json::array();
    for (auto v : h) a.push_back(from_python(v, depth + 1));
    return a;
  }
  throw py::type_error("cannot write " +
                       std::string(py::str(py::type::handle_of(h).attr("__name__"))) + " as JSON");
}

void bind_json(py::module_& m) {
  // The compact dump `epwa detect --jsonl` writes (nlohmann::json itself), so that result lines
  // written from Python equal the command's byte for byte, numbers included.
  m.def(
      "_json_dumps",
      [](py::handle value) {
        return from_python(value, 0).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      },
      py::arg("value"));
}

}  // namespace epwa::python
