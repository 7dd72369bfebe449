// Model.generate: continue a prompt, watermarked or not, exactly as `epwa generate` does (same
// sampler, stop and suppressed tokens, context cap).
#include "epwa/generate.hpp"

#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>

#include "bindings.hpp"
#include "epwa/error.hpp"
#include "epwa/json_constraint.hpp"
#include "epwa/session.hpp"
#include "watermark_config.hpp"

namespace py = pybind11;

namespace epwa::python {
namespace {

struct Generation {
  std::vector<int32_t> prompt_tokens, tokens;
  std::optional<std::string> text;  // None without a tokenizer
  py::dict watermark;               // as `epwa generate --json` writes it
};

// The prompt's ids: a str is tokenized with BOS (as --prompt), ids are taken as they are (BOS
// included, as --prompt-tokens).
std::vector<int32_t> prompt_ids(const LoadedModel& lm, py::handle prompt) {
  if (!py::isinstance<py::str>(prompt)) return token_ids(prompt, "prompt");
  const std::string text = prompt.cast<std::string>();
  check(!text.empty(), "the prompt is empty");
  py::gil_scoped_release free;
  return lm.need_tokenizer().encode(text, true, false);
}

// The CLI's option checks, in the argument names of Python.
void check_sampling(int32_t max_new, const SamplingOptions& s) {
  check(max_new >= 0,
        "max_new_tokens must be from 0 to 2147483647, got " + std::to_string(max_new));
  check(std::isfinite(s.temperature) && s.temperature >= 0 && s.temperature <= 100,
        "temperature must be a number from 0 to 100, got " + std::to_string(s.temperature));
  check(s.top_k >= 0, "top_k must be 0 (off) or more, got " + std::to_string(s.top_k));
  check(std::isfinite(s.top_p) && s.top_p > 0 && s.top_p <= 1,
        "top_p must be a number above 0, at most 1, got " + std::to_string(s.top_p));
}

Generation generate(const LoadedModel& lm, py::handle prompt, int32_t max_new_tokens,
                    float temperature, float top_p, uint64_t seed, const KeyedConfig* watermark,
                    int32_t top_k, bool allow_special_tokens, py::object json_schema,
                    int32_t min_new_tokens) {
  const Model& m = *lm.model;
  GenerateOptions o;
  o.max_new_tokens = max_new_tokens;
  o.min_new_tokens = min_new_tokens;
  o.sampling = {temperature, top_k, top_p, seed};
  check_sampling(max_new_tokens, o.sampling);
  Generation g;
  g.prompt_tokens = prompt_ids(lm, prompt);
  const int64_t ctx = m.config().max_position_embeddings;
  check(static_cast<int64_t>(g.prompt_tokens.size()) <= ctx, [&] {
    return "the prompt's " + std::to_string(g.prompt_tokens.size()) +
           " tokens are beyond the model's context of " + std::to_string(ctx) +
           " positions (max_position_embeddings); shorten it";
  });
  const int32_t room =
      max_generated_tokens(m, static_cast<int64_t>(g.prompt_tokens.size()), max_new_tokens);
  if (room < max_new_tokens) {
    const std::string note = "at most " + std::to_string(room) + " new tokens (max_new_tokens " +
                             std::to_string(max_new_tokens) + "): the prompt's " +
                             std::to_string(g.prompt_tokens.size()) +
                             " tokens and the text must fit the model's context of " +
                             std::to_string(ctx) + " tokens";
    if (PyErr_WarnEx(PyExc_UserWarning, note.c_str(), 1) != 0) throw py::error_already_set();
  }
  o.stop_tokens = {m.config().eos_token_id};
  if (!allow_special_tokens) {
    // As the CLI: no control, unknown or padding token, nor BOS, is sampled; EOS ends the text.
    const int32_t vocab = m.config().vocab_size;
    if (lm.tokenizer) o.suppress_tokens = non_text_token_ids(*lm.tokenizer, vocab);
    if (const int32_t bos = m.config().bos_token_id; bos >= 0 && bos < vocab)
      o.suppress_tokens.push_back(bos);
    std::erase_if(o.suppress_tokens, [&](int32_t id) {
      return std::find(o.stop_tokens.begin(), o.stop_tokens.end(), id) != o.stop_tokens.end();
    });
  }
  // json_schema: any JSON-serialisable schema (as `epwa generate --json-schema` reads from a file).
  std::unique_ptr<JsonConstraint> constraint;
  if (!json_schema.is_none()) {
    check(lm.tokenizer != nullptr, "json_schema needs the model's tokenizer");
    const std::string text = py::str(py::module_::import("json").attr("dumps")(json_schema));
    try {
      constraint = std::make_unique<JsonConstraint>(
          std::make_shared<const JsonSchema>(nlohmann::json::parse(text)),
          std::make_shared<const TokenTexts>(*lm.tokenizer), "", o.stop_tokens);
    } catch (const Error& e) {
      throw Error(std::string("json_schema: ") + e.what());
    }
    o.constraint = constraint.get();
  }
  std::optional<WatermarkConfig> used;
  size_t key_index = 0;
  {
    py::gil_scoped_release free;
    if (watermark != nullptr) {
      std::string secret = watermark->key;
      if (watermark->rotates()) {  // KR-v1: the key this seed and prompt pick
        const auto& ring = watermark->ring_secrets;
        key_index = keyring_pick(keyring_rotation_secret(ring), o.sampling.seed, g.prompt_tokens,
                                 ring.size());
        secret = ring[key_index];
      }
      Watermarker wm(m, watermark->lists(lm, secret), watermark->resolved(lm));
      g.tokens = wm.generate(*lm.model, g.prompt_tokens, o);
      used = wm.config();
    } else {
      g.tokens = epwa::generate(*lm.model, g.prompt_tokens, o);
    }
    if (lm.tokenizer) g.text = lm.tokenizer->decode_continuation(g.tokens, true);
  }
  g.watermark["mode"] = used ? std::string(watermark_mode_name(used->mode)) : "none";
  if (used) {
    g.watermark["gamma"] = used->gamma;
    g.watermark["delta"] = used->delta;
    g.watermark["router_layer"] = used->router_layer;
    if (!used->expert_deltas.empty()) g.watermark["expert_deltas"] = used->expert_deltas;
    if (used->context_buckets) g.watermark["context_buckets"] = used->context_buckets;
    if (used->min_entropy > 0) g.watermark["min_entropy"] = used->min_entropy;
    if (watermark->rotates()) {  // as `epwa generate --rotate-keys --json`
      py::dict ring;
      ring["keys"] = watermark->ring_ids.size();
      ring["key_id"] = watermark->ring_ids[key_index];
      g.watermark["keyring"] = ring;
    }
  }
  g.watermark["router_hash"] = lm.router_hash;
  return g;
}

}  // namespace

void bind_generate(py::module_& m, ModelClass& model) {
  py::class_<Generation>(m, "Generation", "What Model.generate returns")
      .def_readonly("prompt_tokens", &Generation::prompt_tokens, "the prompt's ids, BOS included")
      .def_readonly("tokens", &Generation::tokens, "the new tokens")
      .def_readonly("text", &Generation::text,
                    "the new text, with its leading space (None without a tokenizer)")
      .def_readonly("watermark", &Generation::watermark,
                    "mode, gamma, delta, router_layer (resolved), router_hash")
      .def("__repr__", [](const Generation& g) {
        return "<epwa.Generation " + std::to_string(g.tokens.size()) + " tokens>";
      });
  model.def("generate", &generate, py::arg("prompt"), py::arg("max_new_tokens") = 32,
            py::arg("temperature") = 0.0f, py::arg("top_p") = 1.0f, py::arg("seed") = 0,
            py::arg("watermark") = py::none(), py::arg("top_k") = 0,
            py::arg("allow_special_tokens") = false, py::arg("json_schema") = py::none(),
            py::arg("min_new_tokens") = 0,
            "Generates after `prompt` (a str, BOS added; or ids, BOS included). temperature 0 is "
            "greedy. watermark: a WatermarkConfig, or None for plain text. json_schema: a JSON "
            "schema (a dict; {} for any JSON) the text must match (constrained decoding). "
            "min_new_tokens: EOS is not sampled before this many new tokens.");
}

}  // namespace epwa::python
