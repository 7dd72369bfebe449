// epwa.Detector and epwa.DetectionResult: `epwa detect` for one text or a batch, with the same
// inputs (text or ids, prompt as text or ids, BOS when none) and the same numbers.
#include "epwa/detect.hpp"

#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>

#include "bindings.hpp"
#include "epwa/error.hpp"
#include "epwa/pepi.hpp"
#include "epwa/platform.hpp"
#include "epwa/session.hpp"
#include "watermark_config.hpp"

namespace py = pybind11;

namespace epwa::python {
namespace {

struct PyDetector {
  std::shared_ptr<LoadedModel> lm;
  std::shared_ptr<const GreenLists> lists;
  // rotate_keys: every key of the keyring (lists in ring_ids' order), tested with the corrected
  // rule.
  std::vector<std::string> ring_ids;
  std::vector<std::shared_ptr<const GreenLists>> ring_lists;
  DetectOptions opt;
  std::shared_ptr<ExpertPredictor> predictor;  // PEPI only
  int32_t layer = 0;                           // resolved watermark layer
};

// One input as Python gave it, converted while the GIL is held.
struct Item {
  std::optional<std::string> text, prompt_text;
  std::vector<int32_t> tokens;
  std::optional<std::vector<int32_t>> prompt_ids;
};

struct TokenRow : TokenDetail {
  std::optional<std::string> piece;  // None without a tokenizer
};

struct Result {
  DetectionResult r;                  // with rotate_keys, the best key's (the corrected verdict)
  std::optional<KeyringResult> ring;  // rotate_keys only
  int64_t prompt_tokens = 0, text_tokens = 0;
  std::string router_hash;
  std::vector<TokenRow> tokens;
};

void set_prompt(Item& it, py::handle prompt) {
  if (prompt.is_none()) return;
  if (py::isinstance<py::str>(prompt))
    it.prompt_text = prompt.cast<std::string>();
  else
    it.prompt_ids = token_ids(prompt, "prompt");
}

// A str (the text), ids (of the text), or, in a batch, a dict as a line of `epwa detect --jsonl`:
// "text" or "tokens", optionally "prompt" or "prompt_tokens" (other keys are ignored).
Item item_from(py::handle input, py::handle prompt, bool allow_dict) {
  Item it;
  if (py::isinstance<py::str>(input)) {
    it.text = input.cast<std::string>();
  } else if (allow_dict && py::isinstance<py::dict>(input)) {
    const auto d = py::reinterpret_borrow<py::dict>(input);
    if (d.contains("prompt_tokens"))
      it.prompt_ids = token_ids(d["prompt_tokens"], "prompt_tokens");
    else if (d.contains("prompt"))
      set_prompt(it, d["prompt"]);
    if (d.contains("tokens")) {
      it.tokens = token_ids(d["tokens"], "tokens");
    } else {
      check(d.contains("text"), "item has neither \"tokens\" nor \"text\"");
      if (!py::isinstance<py::str>(d["text"])) throw py::type_error("\"text\" must be a str");
      it.text = d["text"].cast<std::string>();
    }
  } else {
    it.tokens = token_ids(input, "the text");
  }
  // A prompt given to the call replaces the item's own (as --prompt with --jsonl).
  if (!prompt.is_none()) {
    it.prompt_text.reset(), it.prompt_ids.reset();
    set_prompt(it, prompt);
  }
  return it;
}

// As run_one of tools/epwa/detect.cpp; runs without the GIL.
Result run(const PyDetector& d, const Item& it, bool detail) {
  const LoadedModel& lm = *d.lm;
  std::vector<int32_t> context, text;
  if (it.prompt_ids) {
    context = *it.prompt_ids;
  } else if (it.prompt_text) {
    check(!it.prompt_text->empty(), "the prompt is empty");
    context = lm.need_tokenizer().encode(*it.prompt_text, true, false);
  } else {
    // Unknown prompt: BOS only, so the first token of the text is scored too.
    const int32_t bos = lm.tokenizer ? lm.tokenizer->bos_id() : lm.model->config().bos_token_id;
    if (bos >= 0) context = {bos};
  }
  if (it.text) {
    check(!it.text->empty(), "the text is empty");
    text = lm.need_tokenizer().encode(*it.text, false, false);
    check(!text.empty(), "the text encodes to no tokens");
  } else {
    text = it.tokens;
  }
  check(!text.empty(), "no tokens to test");
  std::vector<int32_t> seq = context;
  seq.insert(seq.end(), text.begin(), text.end());
  DetectOptions opt = d.opt;
  opt.tokens_detail = detail;
  Result res;
  const auto prompt_tokens = static_cast<int64_t>(context.size());
  if (!d.ring_lists.empty()) {
    KeyringDetector ring(d.ring_ids, d.ring_lists, opt);  // cheap: the green lists are shared
    if (d.predictor) ring.set_expert_predictor(d.predictor);
    res.ring = detect_tokens(*lm.model, ring, seq, prompt_tokens, d.layer);
    res.r = res.ring->best;
  } else {
    Detector det(d.lists, opt);
    if (d.predictor) det.set_expert_predictor(d.predictor);
    res.r = detect_tokens(*lm.model, det, seq, prompt_tokens, d.layer);
  }
  res.prompt_tokens = static_cast<int64_t>(context.size());
  res.text_tokens = static_cast<int64_t>(text.size());
  res.router_hash = lm.router_hash;
  for (const TokenDetail& t : res.r.tokens) {
    TokenRow row{t, std::nullopt};
    if (lm.tokenizer) row.piece = lm.tokenizer->token_to_piece(t.token);
    res.tokens.push_back(std::move(row));
  }
  return res;
}

// The PEPI predictor as `epwa detect --method pepi` makes it without --api-url: the oracle (the
// bundled one by default, which fits the bundled model only) over the local model's
// distributions.
std::shared_ptr<ExpertPredictor> pepi_predictor(
    LoadedModel& lm, const std::optional<std::filesystem::path>& oracle) {
  std::shared_ptr<const Oracle> o;
  if (oracle) {
    o = std::make_shared<const Oracle>(Oracle::load(*oracle));
    o->check_router_hash(lm.router_hash);
  } else {
    const auto def = path_from_utf8(EPWA_SOURCE_DIR) / "models" / "epwa-tiny-moe.oracle";
    check(std::filesystem::exists(def), "method 'pepi' needs oracle=FILE (no bundled oracle at " +
                                            path_to_utf8(def) +
                                            "; train one with epwa train-oracle)");
    o = std::make_shared<const Oracle>(Oracle::load(def));
    check(o->info().router_hash == lm.router_hash,
          "method 'pepi' needs oracle=FILE for this model: the bundled oracle " +
              path_to_utf8(def) + " fits the bundled model only (router hash " +
              o->info().router_hash.substr(0, 16) + "..., this model's is " +
              lm.router_hash.substr(0, 16) + "...; train one with epwa train-oracle)");
  }
  const int32_t k = o->info().features.full ? 0 : o->info().features.k;
  auto source = std::make_shared<LocalDistributionSource>(*lm.model, k);
  return std::make_shared<PepiPredictor>(std::move(o), std::move(source));
}

PyDetector make(std::shared_ptr<LoadedModel> lm, const KeyedConfig& config,
                const std::string& method, std::optional<std::filesystem::path> oracle,
                double threshold, bool count_repeats, std::optional<int64_t> sample) {
  PyDetector d;
  d.opt.method = detect_method_from_name(method);
  // The config's mode says what its texts carry: green lists, or the exp mode's keyed draws.
  d.opt.scheme = detect_scheme_for(config.config.mode);
  check(threshold >= -100 && threshold <= 100,
        "threshold must be a number from -100 to 100, got " + std::to_string(threshold));
  d.opt.threshold = threshold;
  d.opt.count_repeats = count_repeats;
  d.opt.min_entropy = config.config.min_entropy;  // entropy-aware detection, as the generator's
  const bool cspv = d.opt.method == DetectMethod::Cspv;
  check(cspv || !sample, "sample is for method 'cspv'");
  if (cspv) {
    d.opt.sample = sample.value_or(64);  // the CLI's --sample default
    check(d.opt.sample >= 1, "sample must be 1 or more, got " + std::to_string(d.opt.sample));
  }
  const bool pepi = d.opt.method == DetectMethod::Pepi;
  check(pepi || !oracle, "oracle is for method 'pepi'");
  {
    py::gil_scoped_release free;
    d.layer = model_router_layer(*lm->model, config.config.router_layer);
    d.lists = config.lists(*lm);
    d.ring_ids = config.ring_ids;
    for (const std::string& secret : config.ring_secrets)
      d.ring_lists.push_back(config.lists(*lm, secret));
    if (pepi) d.predictor = pepi_predictor(*lm, oracle);
  }
  d.lm = std::move(lm);
  return d;
}

Result detect_one(const PyDetector& d, py::handle input, py::handle prompt, bool detail) {
  const Item it = item_from(input, prompt, false);
  py::gil_scoped_release free;
  return run(d, it, detail);
}

std::vector<Result> detect_batch(const PyDetector& d, py::iterable inputs, py::handle prompt,
                                 bool detail) {
  if (py::isinstance<py::str>(inputs)) throw py::type_error("texts must be a list, not a str");
  std::vector<Item> items;
  for (py::handle h : inputs) items.push_back(item_from(h, prompt, true));
  std::vector<Result> out;
  out.reserve(items.size());
  py::gil_scoped_release free;
  for (const Item& it : items) out.push_back(run(d, it, detail));
  return out;
}

// The object `epwa detect --json` prints, but for its "load" member.
py::object result_dict(const Result& res) {
  nlohmann::json j = res.ring ? to_json(*res.ring) : to_json(res.r);
  j["prompt_tokens"] = res.prompt_tokens;
  j["text_tokens"] = res.text_tokens;
  j["router_hash"] = res.router_hash;
  if (j.contains("tokens"))
    for (size_t i = 0; i < res.tokens.size(); ++i)
      if (res.tokens[i].piece) j["tokens"][i]["piece"] = *res.tokens[i].piece;
  return to_python(j);
}

void bind_result(py::module_& m) {
  py::class_<TokenRow>(m, "TokenDetail", "One generated position of a detection")
      .def_readonly("position", &TokenDetail::position)
      .def_readonly("token", &TokenDetail::token)
      .def_readonly("expert", &TokenDetail::expert, "top-1 expert of the position before")
      .def_readonly("confidence", &TokenDetail::confidence, "its router probability")
      .def_readonly("green", &TokenDetail::green)
      .def_readonly("scored", &TokenDetail::scored,
                    "False: a repeated (expert, token) pair, or not sampled by CSPV")
      .def_readonly("stratum", &TokenDetail::stratum, "CSPV: low, high or random")
      .def_readonly("piece", &TokenRow::piece)
      .def("__repr__", [](const TokenRow& t) {
        return "<epwa.TokenDetail position " + std::to_string(t.position) + " token " +
               std::to_string(t.token) + " expert " + std::to_string(t.expert) +
               (t.green ? " green" : "") + ">";
      });
  // transformers' WatermarkDetector names first, then the rest of `epwa detect --json`.
  py::class_<Result>(m, "DetectionResult", "What Detector.detect returns")
      .def_property_readonly("num_tokens_scored", [](const Result& x) { return x.r.n; })
      .def_property_readonly("num_green_tokens", [](const Result& x) { return x.r.g; })
      .def_property_readonly("green_fraction",
                             [](const Result& x) -> std::optional<double> {
                               if (x.r.n == 0) return std::nullopt;
                               return static_cast<double>(x.r.g) / x.r.n;
                             })
      .def_property_readonly("z_score", [](const Result& x) { return x.r.z; })
      .def_property_readonly("p_value", [](const Result& x) { return x.r.p_value; })
      .def_property_readonly("prediction", [](const Result& x) { return x.r.detected; })
      .def_property_readonly("method", [](const Result& x) { return x.r.method; })
      .def_property_readonly("log10_p", [](const Result& x) { return x.r.log10_p; })
      .def_property_readonly("plain_z", [](const Result& x) { return x.r.plain_z; })
      .def_property_readonly("reason", [](const Result& x) { return x.r.reason; })
      .def_property_readonly("threshold", [](const Result& x) { return x.r.threshold; })
      .def_property_readonly("gamma", [](const Result& x) { return x.r.gamma; })
      .def_property_readonly("candidates", [](const Result& x) { return x.r.candidates; })
      .def_property_readonly("repeats_skipped", [](const Result& x) { return x.r.repeats_skipped; })
      .def_property_readonly("strata",
                             [](const Result& x) -> py::object {
                               if (x.r.strata.empty()) return py::none();
                               py::dict d;
                               for (const StratumCount& s : x.r.strata)
                                 d[py::str(s.name)] = py::make_tuple(s.hits, s.n);
                               return d;
                             })
      .def_property_readonly(
          "key_id",
          [](const Result& x) -> std::optional<std::string> {
            if (!x.ring) return std::nullopt;
            return x.ring->key_id;
          },
          "rotate_keys: the key with the smallest p-value")
      .def_property_readonly(
          "p_corrected",
          [](const Result& x) -> std::optional<double> {
            if (!x.ring) return std::nullopt;
            return x.ring->p_corrected;
          },
          "rotate_keys: min(1, keys x the best key's p-value)")
      .def_property_readonly(
          "keys", [](const Result& x) { return x.ring ? x.ring->keys : 1; },
          "keys tested (the keyring's size with rotate_keys)")
      .def_readonly("prompt_tokens", &Result::prompt_tokens)
      .def_readonly("text_tokens", &Result::text_tokens)
      .def_readonly("router_hash", &Result::router_hash)
      .def_property_readonly("tokens",
                             [](const Result& x) -> std::optional<std::vector<TokenRow>> {
                               if (x.r.tokens.empty()) return std::nullopt;
                               return x.tokens;
                             })
      .def_property_readonly("experts",
                             [](const Result& x) -> std::optional<std::vector<int32_t>> {
                               if (x.r.tokens.empty()) return std::nullopt;
                               std::vector<int32_t> e;
                               for (const TokenDetail& t : x.r.tokens) e.push_back(t.expert);
                               return e;
                             })
      .def("to_dict", &result_dict, "The object `epwa detect --json` prints (without \"load\")")
      .def("__repr__", [](const Result& x) {
        return "<epwa.DetectionResult " + x.r.method + ": " +
               (x.r.detected ? "watermarked" : "not watermarked") +
               ", z=" + py::repr(py::float_(x.r.z)).cast<std::string>() + ", " +
               std::to_string(x.r.g) + " green of " + std::to_string(x.r.n) + ">";
      });
}

}  // namespace

void bind_detect(py::module_& m) {
  bind_result(m);
  py::class_<PyDetector>(m, "Detector", "Detects the EPW-A watermark of one key in texts")
      .def(py::init(&make), py::arg("model"), py::arg("config"), py::arg("method") = "full",
           py::arg("oracle") = py::none(), py::kw_only(), py::arg("threshold") = 4.0,
           py::arg("count_repeats") = false, py::arg("sample") = py::none(),
           "method: full, cspv (sample tokens, default 64), weighted or pepi (oracle file; "
           "default the bundled model's). Detected means z > threshold.")
      .def("detect", &detect_one, py::arg("text"), py::arg("prompt") = py::none(),
           py::arg("detail") = false,
           "text: a str or the text's ids. prompt: context only (a str, BOS added; or ids, BOS "
           "included); None: BOS only. detail: per-token rows in .tokens and .experts.")
      .def("detect_batch", &detect_batch, py::arg("texts"), py::arg("prompt") = py::none(),
           py::arg("detail") = false,
           "detect() of each item: a str, ids, or a dict with \"text\" or \"tokens\" and "
           "optionally \"prompt\" or \"prompt_tokens\" (as a line of epwa detect --jsonl). "
           "Stops at the first failing item and raises its error.")
      .def_property_readonly("method",
                             [](const PyDetector& d) { return detect_method_name(d.opt.method); })
      .def_property_readonly("router_layer", [](const PyDetector& d) { return d.layer; })
      .def_property_readonly("threshold", [](const PyDetector& d) { return d.opt.threshold; })
      .def_property_readonly("model", [](const PyDetector& d) { return d.lm; });
}

}  // namespace epwa::python
