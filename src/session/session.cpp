#include "epwa/session.hpp"

#include <fstream>
#include <iterator>

#include "epwa/error.hpp"
#include "epwa/files.hpp"
#include "epwa/platform.hpp"
#include "epwa/quant.hpp"

namespace epwa {

std::string router_hash(const Model& model) {
  const ModelConfig& c = model.config();
  const int32_t n = c.num_moe_layers();
  std::vector<std::vector<float>> data, bias;
  std::vector<RouterMatrix> routers;
  data.reserve(n);
  for (int32_t l = 0; l < n; ++l) data.push_back(model.router_f32(l));
  // GPT-OSS's router bias, DeepSeek-V3's correction bias (empty for the other families).
  for (int32_t l = 0; l < n; ++l) bias.push_back(model.router_bias_f32(l));
  for (int32_t l = 0; l < n; ++l)
    routers.emplace_back(l, c.num_experts, c.hidden_size, data[l], model.moe_layers()[l], bias[l]);
  // Mixtral keeps IRSH-v1 (existing keys and oracles); every other family has IRSH-v2.
  return c.family == "mixtral" ? irsh_v1(routers) : irsh_v2(c.num_layers, c.router_rule(), routers);
}

int32_t model_router_layer(const Model& model, int32_t requested) {
  const ModelConfig& c = model.config();
  // The pathway rules of docs/SPEC.md section 0 (Model::pathway): softmax, GPT-OSS's biased top-k
  // softmax, DeepSeek-V3's sigmoid + correction bias. A softmax router whose bias only ranks has
  // none.
  check(c.router_scoring != RouterScoring::Softmax || !c.router_bias,
        "watermarking and detection are not defined for this router (" + c.router_rule() +
            "): EPW-A v2 has no pathway rule for a softmax router with a selection bias");
  return resolve_router_layer(requested, c.num_moe_layers());
}

namespace {
// Keeps the router logits of one layer, one row per position.
struct LayerRecorder : RouterObserver {
  int32_t layer = 0;
  int32_t experts = 0;
  std::vector<RouterRecord> records;
  void observe(const RouterObservation& o) override {
    if (o.layer != layer) return;
    check(o.position == static_cast<int64_t>(records.size()),
          "router records: position " + std::to_string(o.position) + " out of order");
    records.push_back(top1_expert(o));
  }
};
}  // namespace

namespace {

// The watermark layer's router records of `tokens` from the teacher-forced pass that `run(cache,
// fo)` makes, fo set to observe that layer only. One record per token, checked.
template <class Run>
std::vector<RouterRecord> recorded_pass(Model& model, std::span<const int32_t> tokens,
                                        int32_t layer, Run&& run) {
  check(!tokens.empty(), "router records: the token sequence is empty");
  LayerRecorder rec;
  rec.layer = model_router_layer(model, layer);
  rec.records.reserve(tokens.size());
  Context cache = model.make_context(static_cast<int64_t>(tokens.size()));
  ForwardOptions fo;
  fo.observer = &rec;
  fo.watch = {rec.layer};  // only the watermark layer is observed
  run(cache, fo);
  check(rec.records.size() == tokens.size(),
        "router records: the engine reported " + std::to_string(rec.records.size()) +
            " positions for " + std::to_string(tokens.size()) + " tokens");
  return std::move(rec.records);
}

}  // namespace

std::vector<RouterRecord> router_records(Model& model, std::span<const int32_t> tokens,
                                         int32_t layer) {
  return recorded_pass(model, tokens, layer, [&](Context& cache, ForwardOptions& fo) {
    fo.stop_after_router = fo.watch[0];  // no later layer, no output head
    model.forward(tokens, cache, fo);
  });
}

RecordsAndEntropy router_records_and_entropy(Model& model, std::span<const int32_t> tokens,
                                             int32_t layer) {
  RecordsAndEntropy out;
  out.records = recorded_pass(model, tokens, layer, [&](Context& cache, ForwardOptions& fo) {
    fo.all_logits = true;
    out.entropy.reserve(tokens.size());
    const auto v = static_cast<size_t>(model.config().vocab_size);
    constexpr size_t kChunk = 256;  // bounds the logits held at once to 256 x V floats
    for (size_t at = 0; at < tokens.size(); at += kChunk) {
      const auto part = tokens.subspan(at, std::min(kChunk, tokens.size() - at));
      const std::vector<float> logits = model.forward(part, cache, fo);
      for (size_t i = 0; i < part.size(); ++i)
        out.entropy.push_back(static_cast<float>(
            next_token_entropy(std::span<const float>(logits.data() + i * v, v))));
    }
  });
  return out;
}

ObserverFan::ObserverFan(std::initializer_list<RouterObserver*> observers) {
  for (RouterObserver* o : observers) add(o);
}

void ObserverFan::add(RouterObserver* o) {
  if (o != nullptr) observers_.push_back(o);
}

void ObserverFan::observe(const RouterObservation& obs) {
  for (RouterObserver* o : observers_) o->observe(obs);
}

std::vector<int32_t> ObserverFan::layers() const {
  std::vector<int32_t> all;
  for (const RouterObserver* o : observers_) {
    const std::vector<int32_t> l = o->layers();
    if (l.empty()) return {};
    all.insert(all.end(), l.begin(), l.end());
  }
  return all;
}

std::string read_key_file(const std::filesystem::path& path) {
  const std::string key = read_input_file(path, "key file");
  check(!key.empty(), "key file '" + path_to_utf8(path) + "' is empty");
  return key;
}

std::shared_ptr<const GreenLists> make_green_lists(const Model& model, std::string_view key,
                                                   double gamma, int32_t context_buckets) {
  check(!key.empty(), "watermark key is empty (give --key, --key-file or EPW_KEY)");
  const ModelConfig& c = model.config();
  return std::make_shared<const GreenLists>(key, router_hash(model), c.vocab_size, gamma,
                                            c.num_experts, context_buckets);
}

namespace {
WatermarkConfig resolved(const Model& model, WatermarkConfig cfg) {
  cfg.router_layer = model_router_layer(model, cfg.router_layer);
  return cfg;
}
}  // namespace

Watermarker::Watermarker(const Model& model, std::string_view key, WatermarkConfig cfg)
    : Watermarker(model, make_green_lists(model, key, cfg.gamma, cfg.context_buckets), cfg) {}

Watermarker::Watermarker(const Model& model, std::shared_ptr<const GreenLists> lists,
                         WatermarkConfig cfg)
    : lists_(std::move(lists)), processor_(resolved(model, std::move(cfg)), lists_) {
  check(lists_->vocab_size() == model.config().vocab_size &&
            lists_->num_experts() == model.config().num_experts,
        "watermark: green lists do not match the model's vocabulary or expert count");
}

std::vector<int32_t> Watermarker::generate(Model& model, std::span<const int32_t> prompt,
                                           GenerateOptions o) {
  check(o.processor == nullptr, "watermark generate: another logits processor is already set");
  check(!prompt.empty(), "watermark generate: the prompt is empty");
  check(processor_.config().mode != WatermarkMode::Exp || o.sampling.temperature > 0,
        "the exp watermark makes the sampling draw: it needs a temperature above 0 (greedy "
        "decoding leaves nothing to key)");
  processor_.reset();
  ObserverFan fan{&processor_, o.observer};
  o.observer = &fan;
  o.processor = &processor_;
  // CTX-v1 keys each step by the previous token too: the prompt's last, then each sampled one.
  processor_.set_previous_token(prompt.back());
  o.on_token = [this, next = std::move(o.on_token)](int32_t t) {
    processor_.set_previous_token(t);
    if (next) next(t);
  };
  return epwa::generate(model, prompt, o);
}

namespace {

// The records (and entropies) a detector with `opt` needs for `tokens`; `in` views `keep`.
void fill_input(Model& model, const DetectOptions& opt, std::span<const int32_t> tokens,
                int64_t prompt_tokens, int32_t layer, DetectionInput& in, RecordsAndEntropy& keep) {
  check(!tokens.empty(), "detect: the token sequence is empty");
  check(prompt_tokens >= 0 && prompt_tokens <= static_cast<int64_t>(tokens.size()),
        "detect: prompt length " + std::to_string(prompt_tokens) + " outside the sequence of " +
            std::to_string(tokens.size()) + " tokens");
  in.tokens = tokens;
  in.prompt_tokens = prompt_tokens;
  // The last position's router (and distribution) governs no token: leave it out of the pass.
  const auto governing = tokens.size() > 1 ? tokens.first(tokens.size() - 1) : tokens;
  if (opt.min_entropy > 0) {
    check(opt.method != DetectMethod::Pepi,
          "detect: min_entropy needs the model's own distributions, which PEPI does not use");
    keep = router_records_and_entropy(model, governing, layer);
    in.records = keep.records;
    in.entropy = keep.entropy;
  } else if (opt.method != DetectMethod::Pepi) {
    keep.records = router_records(model, governing, layer);
    in.records = keep.records;
  }
}

}  // namespace

DetectionResult detect_tokens(Model& model, const Detector& detector,
                              std::span<const int32_t> tokens, int64_t prompt_tokens,
                              int32_t layer) {
  DetectionInput in;
  RecordsAndEntropy keep;
  fill_input(model, detector.options(), tokens, prompt_tokens, layer, in, keep);
  return detector.detect(in);
}

KeyringResult detect_tokens(Model& model, const KeyringDetector& detector,
                            std::span<const int32_t> tokens, int64_t prompt_tokens, int32_t layer) {
  DetectionInput in;
  RecordsAndEntropy keep;
  fill_input(model, detector.options(), tokens, prompt_tokens, layer, in, keep);
  return detector.detect(in);
}

}  // namespace epwa
