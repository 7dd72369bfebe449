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

}  // namespace epwa::python
