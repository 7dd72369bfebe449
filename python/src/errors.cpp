// epwa::Error as the Python exception epwa.Error, with the same one-line message.
#include "bindings.hpp"
#include "epwa/error.hpp"

namespace epwa::python {

void bind_errors(pybind11::module_& m) {
  // A RuntimeError, so that code catching the built-in kinds still sees it.
  pybind11::register_exception<Error>(m, "Error", PyExc_RuntimeError);
}

}  // namespace epwa::python
