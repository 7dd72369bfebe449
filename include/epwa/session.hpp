// Glue between the engine and EPW-A: the router hash of a loaded model, teacher-forced router
// records, a watermarking generator and one-call detection. Evaluation, PEPI and the CLI use these
// instead of wiring observers by hand.
#pragma once
#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "epwa/detect.hpp"
#include "epwa/generate.hpp"
#include "epwa/model.hpp"
#include "epwa/observe.hpp"
#include "epwa/watermark.hpp"

namespace epwa {

// The router hash of `model` (docs/SPEC.md): IRSH-v1 over the routers of its MoE layers for
// Mixtral, IRSH-v2 (with the layer list and routing rule) for every other family.
std::string router_hash(const Model& model);

// The MoE layer index the watermark uses: `requested` < 0 = the last MoE layer. Throws Error when
// out of range.
int32_t model_router_layer(const Model& model, int32_t requested = -1);

// The router decision (top-1 expert, confidence) at MoE layer `layer` (< 0 = last) for every
// position of `tokens`, from one teacher-forced pass that stops right after that layer's router
// (no later layers, no output head). records[p] belongs to position p; token t is governed by
// records[t - 1]. Throws Error on an empty sequence or a bad token id.
std::vector<RouterRecord> router_records(Model& model, std::span<const int32_t> tokens,
                                         int32_t layer = -1);

// The router records at MoE layer `layer` (< 0 = last) and the entropy (nats) of the model's
// next-token distribution at every position of `tokens`, from one full teacher-forced pass (every
// position's logits, taken in chunks of 256 positions): what entropy-aware detection needs.
struct RecordsAndEntropy {
  std::vector<RouterRecord> records;
  std::vector<float> entropy;
};
RecordsAndEntropy router_records_and_entropy(Model& model, std::span<const int32_t> tokens,
                                             int32_t layer = -1);

// Forwards every observation to several observers, in the order added (null ones are skipped).
class ObserverFan : public RouterObserver {
 public:
  ObserverFan() = default;
  ObserverFan(std::initializer_list<RouterObserver*> observers);
  void add(RouterObserver* o);
  void observe(const RouterObservation& obs) override;
  std::vector<int32_t> layers() const override;  // every observer's (empty if one reads all)

 private:
  std::vector<RouterObserver*> observers_;
};

// The watermark key: raw bytes of a key file (throws Error when it is missing, unreadable or
// empty).
std::string read_key_file(const std::filesystem::path& path);

// The E green lists of `model` for a key and gamma (V = vocab size, hash = router_hash(model));
// with context_buckets H > 0 the E * H lists of CTX-v1 (docs/SPEC.md section 10).
std::shared_ptr<const GreenLists> make_green_lists(const Model& model, std::string_view key,
                                                   double gamma, int32_t context_buckets = 0);

// Generation with the EPW-A watermark: owns the green lists and the WatermarkProcessor of one
// model and key. cfg.router_layer < 0 means the last MoE layer (resolved in the constructor).
// Careful: WatermarkConfig's default router_layer is 0 (the first layer); set -1 for the
// spec's default, and detect with config().router_layer.
class Watermarker {
 public:
  // Throws Error on an empty key or invalid parameters (see GreenLists, WatermarkProcessor).
  Watermarker(const Model& model, std::string_view key, WatermarkConfig cfg);
  // Shares already built lists (same model and gamma).
  Watermarker(const Model& model, std::shared_ptr<const GreenLists> lists, WatermarkConfig cfg);

  // generate() with the watermark processor plugged in; o.observer (if set) still sees every
  // router decision. o.processor must be null. Returns the new tokens only.
  std::vector<int32_t> generate(Model& model, std::span<const int32_t> prompt, GenerateOptions o);

  const WatermarkConfig& config() const { return processor_.config(); }  // layer resolved
  std::shared_ptr<const GreenLists> lists() const { return lists_; }
  const std::string& router_hash() const { return lists_->router_hash(); }

 private:
  std::shared_ptr<const GreenLists> lists_;
  WatermarkProcessor processor_;
};

// Detects the watermark in `tokens` ([BOS] [prompt] text; the first `prompt_tokens` are context
// only) with the detector's method: one router_records() pass at `layer` (< 0 = last MoE layer;
// pass Watermarker::config().router_layer to match a generation), skipped for PEPI, whose
// predictor supplies the records.
DetectionResult detect_tokens(Model& model, const Detector& detector,
                              std::span<const int32_t> tokens, int64_t prompt_tokens,
                              int32_t layer);
// The same with a keyring: one pass, every key tested on its records (docs/SPEC.md section 9).
KeyringResult detect_tokens(Model& model, const KeyringDetector& detector,
                            std::span<const int32_t> tokens, int64_t prompt_tokens, int32_t layer);

}  // namespace epwa
