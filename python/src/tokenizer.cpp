// epwa.Tokenizer: the model's tokenizer, as `epwa tokenize` and the other commands use it.
#include <pybind11/stl.h>

#include "bindings.hpp"

namespace py = pybind11;

namespace epwa::python {

void bind_tokenizer(py::module_& m) {
  py::class_<Tokenizer, std::shared_ptr<Tokenizer>>(
      m, "Tokenizer", "The tokenizer of a model (Model.tokenizer); see docs/TOKENIZERS.md")
      .def(
          "encode",
          [](const Tokenizer& t, const std::string& text, bool add_special, bool parse_special) {
            py::gil_scoped_release free;
            return t.encode(text, add_special, parse_special);
          },
          py::arg("text"), py::arg("add_special") = true, py::arg("parse_special") = true,
          "Token ids of `text`; add_special adds BOS/EOS as the tokenizer asks, parse_special "
          "reads "
          "control tokens written in the text")
      .def(
          "decode",
          [](const Tokenizer& t, py::handle ids, bool skip_special) {
            const auto v = token_ids(ids, "ids");
            py::gil_scoped_release free;
            return t.decode(v, skip_special);
          },
          py::arg("ids"), py::arg("skip_special") = false)
      .def(
          "decode_continuation",
          [](const Tokenizer& t, py::handle ids, bool skip_special) {
            const auto v = token_ids(ids, "ids");
            py::gil_scoped_release free;
            return t.decode_continuation(v, skip_special);
          },
          py::arg("ids"), py::arg("skip_special") = false,
          "As decode, keeping the leading space a text after a prompt starts with")
      .def("token_to_piece", &Tokenizer::token_to_piece, py::arg("id"))
      .def("piece_to_id", &Tokenizer::piece_to_id, py::arg("piece"))
      .def("is_special", &Tokenizer::is_special, py::arg("id"))
      .def_property_readonly("vocab_size", &Tokenizer::vocab_size)
      .def_property_readonly("bos_id", &Tokenizer::bos_id)
      .def_property_readonly("eos_id", &Tokenizer::eos_id)
      .def_property_readonly("unk_id", &Tokenizer::unk_id)
      .def_property_readonly("kind", &Tokenizer::kind)
      .def("__repr__", [](const Tokenizer& t) {
        return "<epwa.Tokenizer " + t.kind() + ", " + std::to_string(t.vocab_size()) + " tokens>";
      });
}

}  // namespace epwa::python
