// epwa.WatermarkConfig: the key (bytes, text, key file, keyring id or $EPW_KEY, as the CLI and the
// server take it) and the EPW-A parameters, checked when made.
#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include <cmath>
#include <cstdlib>
#include <optional>

#include "epwa/error.hpp"
#include "epwa/server.hpp"
#include "epwa/session.hpp"
#include "watermark_config.hpp"

namespace py = pybind11;

namespace epwa::python {

WatermarkConfig KeyedConfig::resolved(const LoadedModel& lm) const {
  WatermarkConfig c = config;
  c.router_layer = model_router_layer(*lm.model, config.router_layer);
  return c;
}

std::shared_ptr<const GreenLists> KeyedConfig::lists(const LoadedModel& lm,
                                                     const std::string& secret) const {
  const ModelConfig& c = lm.model->config();
  return std::make_shared<const GreenLists>(secret, lm.router_hash, c.vocab_size, config.gamma,
                                            c.num_experts, config.context_buckets);
}

namespace {

std::string key_bytes(py::handle key, const std::optional<std::filesystem::path>& key_file,
                      const std::optional<std::filesystem::path>& keyring,
                      const std::optional<std::string>& key_id, std::string& id_out) {
  const int given = !key.is_none() + key_file.has_value() + (keyring || key_id);
  check(given <= 1, "give one of key, key_file or keyring (with key_id)");
  if (!key.is_none()) {
    if (!py::isinstance<py::str>(key) && !py::isinstance<py::bytes>(key))
      throw py::type_error("key must be str or bytes");
    // str: its UTF-8, as --key; bytes: as they are, as --key-file.
    return key.cast<std::string>();
  }
  if (key_file) return read_key_file(*key_file);
  if (keyring || key_id) {
    check(keyring.has_value(), "key_id names a key of a keyring: give keyring=FILE too");
    const Keyring ring = Keyring::load(*keyring);
    id_out = key_id.value_or(ring.default_id);
    const auto it = ring.keys.find(id_out);
    check(it != ring.keys.end(), "keyring " + keyring->string() + " has no key '" + id_out + "'");
    return it->second;
  }
  if (const char* env = std::getenv("EPW_KEY"); env && *env) return env;
  throw Error(
      "no watermark key: give key, key_file, keyring (with key_id) or set EPW_KEY (there is no "
      "default key)");
}

void check_delta(double d, const char* what) {
  check(d >= 0 && d <= kMaxDelta,
        std::string(what) + " must be a number from 0 to 10000, got " + std::to_string(d));
}

// The parameters' checks, for a new config and an unpickled one.
KeyedConfig checked(std::string key, std::string key_id, const std::string& mode, double gamma,
                    double delta, int32_t router_layer, const std::vector<double>& expert_deltas,
                    int32_t context_buckets, double min_entropy, std::vector<std::string> ring_ids,
                    std::vector<std::string> ring_secrets) {
  KeyedConfig k;
  check(
      context_buckets == 0 || (context_buckets >= 2 && context_buckets <= 65536),
      "context_buckets must be 0 (off) or from 2 to 65536, got " + std::to_string(context_buckets));
  check(std::isfinite(min_entropy) && min_entropy >= 0 && min_entropy <= 20,
        "min_entropy must be a number of nats from 0 to 20, got " + std::to_string(min_entropy));
  check(ring_ids.size() == ring_secrets.size(), "not a pickled WatermarkConfig");
  k.config.context_buckets = context_buckets;
  k.config.min_entropy = min_entropy;
  k.ring_ids = std::move(ring_ids);
  k.ring_secrets = std::move(ring_secrets);
  check(!key.empty(), "the watermark key is empty");
  k.key = std::move(key);
  k.key_id = std::move(key_id);
  k.config.mode = watermark_mode_from_name(mode);
  check(gamma > 0.0 && gamma < 1.0, "gamma must be in (0, 1), got " + std::to_string(gamma));
  check_delta(delta, "delta");
  k.config.gamma = gamma;
  k.config.delta = delta;
  k.config.router_layer = router_layer;
  check(expert_deltas.empty() || k.config.mode == WatermarkMode::EWP,
        "expert_deltas is for mode 'ewp' (gsg uses the one delta)");
  for (double d : expert_deltas) {
    check_delta(d, "each of expert_deltas");
    // Rounded to float as the CLI's --expert-deltas list is, so both watermark alike.
    k.config.expert_deltas.push_back(static_cast<float>(d));
  }
  return k;
}

KeyedConfig make(py::handle key, std::optional<std::filesystem::path> key_file,
                 std::optional<std::filesystem::path> keyring, std::optional<std::string> key_id,
                 const std::string& mode, double gamma, double delta, int32_t router_layer,
                 std::optional<std::vector<double>> expert_deltas, bool rotate_keys,
                 int32_t context_buckets, double min_entropy) {
  std::vector<std::string> ids, secrets;
  if (rotate_keys) {
    check(keyring.has_value(), "rotate_keys picks a key of a keyring per generation: give keyring");
    check(!key_id, "rotate_keys picks the key itself: give no key_id");
    for (const auto& [id, secret] : Keyring::load(*keyring).keys) {  // keyring order: by id
      ids.push_back(id);
      secrets.push_back(secret);
    }
  }
  std::string id;
  std::string bytes = key_bytes(key, key_file, keyring, key_id, id);
  return checked(std::move(bytes), std::move(id), mode, gamma, delta, router_layer,
                 expert_deltas.value_or(std::vector<double>{}), context_buckets, min_entropy,
                 std::move(ids), std::move(secrets));
}

}  // namespace

void bind_watermark(py::module_& m) {
  py::class_<KeyedConfig>(m, "WatermarkConfig",
                          "An EPW-A key and its parameters, for Model.generate and Detector")
      .def(py::init(&make), py::arg("key") = py::none(), py::kw_only(),
           py::arg("key_file") = py::none(), py::arg("keyring") = py::none(),
           py::arg("key_id") = py::none(), py::arg("mode") = "gsg", py::arg("gamma") = 0.5,
           py::arg("delta") = 2.0, py::arg("router_layer") = -1,
           py::arg("expert_deltas") = py::none(), py::arg("rotate_keys") = false,
           py::arg("context_buckets") = 0, py::arg("min_entropy") = 0.0,
           "key: str (its UTF-8) or bytes; else key_file (raw bytes), keyring with key_id (its "
           "default without), else $EPW_KEY. mode gsg, ewp or exp (distortion-free; sampling "
           "only); router_layer < 0 counts from the last MoE layer. rotate_keys (with keyring): a "
           "key of the keyring per generation (KR-v1), detection tests every key. "
           "context_buckets H: CTX-v1 lists keyed by the expert and one of H buckets of the "
           "previous token (0: off). min_entropy (nats): steps of less entropy are left unbiased "
           "and unscored.")
      .def_property_readonly(
          "mode", [](const KeyedConfig& k) { return watermark_mode_name(k.config.mode); })
      .def_property_readonly("gamma", [](const KeyedConfig& k) { return k.config.gamma; })
      .def_property_readonly("delta", [](const KeyedConfig& k) { return k.config.delta; })
      .def_property_readonly("router_layer",
                             [](const KeyedConfig& k) { return k.config.router_layer; })
      .def_property_readonly("expert_deltas",
                             [](const KeyedConfig& k) { return k.config.expert_deltas; })
      .def_property_readonly("key_id",
                             [](const KeyedConfig& k) -> std::optional<std::string> {
                               if (k.key_id.empty() || k.rotates()) return std::nullopt;
                               return k.key_id;
                             })
      .def_property_readonly("rotate_keys", &KeyedConfig::rotates)
      .def_property_readonly(
          "key_ids", [](const KeyedConfig& k) { return k.ring_ids; },
          "rotate_keys: the keyring's ids, in keyring order")
      .def_property_readonly("context_buckets",
                             [](const KeyedConfig& k) { return k.config.context_buckets; })
      .def_property_readonly("min_entropy",
                             [](const KeyedConfig& k) { return k.config.min_entropy; })
      // A pickle carries the key (workers of epwa.dask need it): ship it to trusted places only.
      .def(py::pickle(
          [](const KeyedConfig& k) {
            py::list secrets;
            for (const std::string& s : k.ring_secrets) secrets.append(py::bytes(s));
            return py::make_tuple(
                py::bytes(k.key), k.key_id, std::string(watermark_mode_name(k.config.mode)),
                k.config.gamma, k.config.delta, k.config.router_layer, k.config.expert_deltas,
                k.config.context_buckets, k.config.min_entropy, k.ring_ids, secrets);
          },
          [](const py::tuple& t) {
            // 7 fields: a pickle from before the defences (no buckets, no rotation).
            check(t.size() == 11 || t.size() == 7, "not a pickled WatermarkConfig");
            const bool old = t.size() == 7;
            using Ids = std::vector<std::string>;
            return checked(t[0].cast<std::string>(), t[1].cast<std::string>(),
                           t[2].cast<std::string>(), t[3].cast<double>(), t[4].cast<double>(),
                           t[5].cast<int32_t>(), t[6].cast<std::vector<double>>(),
                           old ? 0 : t[7].cast<int32_t>(), old ? 0.0 : t[8].cast<double>(),
                           old ? Ids{} : t[9].cast<Ids>(), old ? Ids{} : t[10].cast<Ids>());
          }))
      .def("__repr__", [](const KeyedConfig& k) {  // never the key
        return "<epwa.WatermarkConfig " + std::string(watermark_mode_name(k.config.mode)) +
               " gamma=" + py::repr(py::float_(k.config.gamma)).cast<std::string>() +
               " delta=" + py::repr(py::float_(k.config.delta)).cast<std::string>() +
               " router_layer=" + std::to_string(k.config.router_layer) +
               (k.rotates() ? " rotate_keys=" + std::to_string(k.ring_ids.size()) : "") +
               (k.config.context_buckets
                    ? " context_buckets=" + std::to_string(k.config.context_buckets)
                    : "") +
               ">";
      });
}

}  // namespace epwa::python
