// The MoE transformer of every family in the registry (include/epwa/arch.hpp): an immutable Model
// (config and weights, shareable across threads) and a Context per sequence (KV cache and scratch),
// so that several threads can run their own Contexts on one Model at once.
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "epwa/arch.hpp"
#include "epwa/backend.hpp"
#include "epwa/config.hpp"
#include "epwa/observe.hpp"
#include "epwa/tensor.hpp"

namespace epwa {

class Model;
struct LoadOptions;
struct LoadReport;

struct ForwardOptions {
  RouterObserver* observer = nullptr;
  // The MoE layers (0-based among MoE layers) the observer is told about; empty: all.
  std::vector<int32_t> watch;
  bool all_logits = false;  // logits of every position, else only of the last one
  // Stop right after this MoE layer's router (no later layer, no output head): returns no logits
  // and leaves the context unusable for later positions. -1 = full forward.
  int32_t stop_after_router = -1;
};

// One token of a batch: its id, its position in its sequence and the sequence (Model::decode).
struct BatchToken {
  int32_t token = 0;
  int64_t position = 0;
  int32_t sequence = 0;
};

// The state of one or more sequences run together: the keys and values of every layer for the
// positions processed so far (one cache per sequence), and the scratch buffers of the forward pass.
// Copying a Context copies its caches (a fork) with fresh scratch.
class Context {
 public:
  explicit Context(const Model& model, int64_t capacity = 256, int32_t sequences = 1);
  Context(const Context& other);
  Context& operator=(const Context&) = delete;
  ~Context();

  const Model& model() const { return *model_; }
  int32_t sequences() const { return static_cast<int32_t>(seqs_.size()); }
  int64_t size(int32_t seq = 0) const { return at(seq).size; }
  int64_t capacity(int32_t seq = 0) const { return at(seq).capacity; }
  void clear(int32_t seq = 0) { at(seq).size = 0; }
  // Drops positions >= n of sequence `seq` (n <= size(seq)). A model with sliding-window layers
  // keeps only their window, so it can drop at most one position once a window is full (or all).
  void truncate(int64_t n, int32_t seq = 0);
  // Bytes of host KV cache that layer `layer` of sequence `seq` holds now (keys and values): a
  // sliding-window layer never holds more than its window.
  int64_t kv_bytes(int32_t layer, int32_t seq = 0) const;
  // Bytes of host KV cache one position of sequence `seq` takes, over every layer, as allocated
  // (0 when the backend keeps the caches).
  int64_t kv_bytes_per_position(int32_t seq = 0) const;

  struct Scratch;

 private:
  friend class Model;
  struct Seq {
    int64_t capacity = 0, size = 0;
    // Per layer: [capacity x k_dim] and [capacity x v_dim] (ModelConfig::kv_cache_k_dim / _v_dim;
    // MLA: the latent and rope part in k, v empty); empty when the backend keeps the caches.
    std::vector<std::vector<float>> k, v;
  };
  const Seq& at(int32_t seq) const;
  Seq& at(int32_t seq) { return const_cast<Seq&>(std::as_const(*this).at(seq)); }
  void reserve(int32_t seq, int64_t positions);
  const Model* model_;
  int64_t k_dim_, v_dim_;
  std::vector<Seq> seqs_;
  std::unique_ptr<Scratch> scratch_;
};

// A dense FFN, or the shared expert of an MoE layer: down(silu(gate x) * up x).
struct FfnWeights {
  TensorView gate, down, up;
};

// One layer's tensors, as views into mapped files or into buffers the model owns. Parts a family
// does not have are empty views.
struct LayerWeights {
  TensorView attn_norm, wq, wk, wv, wo, ffn_norm;
  TensorView bq, bk, bv, q_norm, k_norm;
  TensorView bo, sinks;  // o bias {D}, one sink logit per head {H}
  // Multi-head latent attention (wq when there is no q_lora_rank, wo).
  TensorView wq_a, q_a_norm, wq_b, wkv_a, kv_a_norm, wkv_b;
  TensorView router, router_bias;
  std::vector<TensorView> w1, w2, w3;  // per routed expert: gate {I, D}, down {D, I}, up {I, D}
  std::vector<TensorView> b1, b2, b3;  // their biases, when the family has them
  TensorView shared_gate_inp;          // {1, D}: the shared expert is scaled by sigmoid(w . x)
  FfnWeights shared;                   // shared expert of an MoE layer
  FfnWeights dense;                    // FFN of a dense layer
};

struct ModelWeights {
  TensorView embed, final_norm, head;
  std::vector<LayerWeights> layers;
};

// The field of `w` that the tensor `s` of the schema fills.
TensorView& weight_slot(ModelWeights& w, const TensorSpec& s);
const TensorView& weight_slot(const ModelWeights& w, const TensorSpec& s);
// Throws Error naming the first tensor whose shape does not match the schema.
void check_weights(const ModelConfig& c, const ModelWeights& w);

class Model {
 public:
  // Loads a HuggingFace folder (config.json + safetensors), a single .safetensors beside a
  // config.json, or a .gguf file. Throws Error naming the file and what is wrong.
  static std::unique_ptr<Model> load(const std::filesystem::path& path);
  // The same, then a loading mode (include/epwa/load_options.hpp): quantizes the attention, expert
  // and output matrices to Q4_0/Q8_0 (routers, norms, embeddings stay as stored), or reads fast
  // mode's cache. Fills `report` when given.
  static std::unique_ptr<Model> load(const std::filesystem::path& path, const LoadOptions& options,
                                     LoadReport* report = nullptr);
  // Builds a model from weights whose storage `keep_alive` owns (used by the loaders and tests).
  Model(ModelConfig config, ModelWeights weights, std::shared_ptr<const void> keep_alive,
        std::filesystem::path source, std::string format);
  ~Model();

  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }
  const std::filesystem::path& source() const { return source_; }
  std::string format() const { return format_; }  // "safetensors" or "gguf"
  // Transformer-layer index of each MoE layer.
  const std::vector<int32_t>& moe_layers() const { return moe_layers_; }

  // Router matrix of MoE layer `moe_layer` (0-based among MoE layers) as f32 (E x D,
  // expert-major), for hashing.
  std::vector<float> router_f32(int32_t moe_layer) const;
  // Its bias as f32 (E values), empty when the router has none (GPT-OSS's router bias,
  // DeepSeek-V3's correction bias).
  std::vector<float> router_bias_f32(int32_t moe_layer) const;
  // How the watermark reads the pathway of MoE layer `moe_layer` from its router logits.
  const PathwayRule& pathway(int32_t moe_layer) const;

  // Runs `tokens` at positions ctx.size() ... and returns their logits ([n][V] row-major when
  // all_logits, else the last position's V values). Thread-safe for distinct contexts.
  std::vector<float> forward(std::span<const int32_t> tokens, Context& ctx,
                             const ForwardOptions& opt = {}) const;
  // Runs a batch of tokens of several sequences of `ctx` at once (the matrix products over the
  // whole batch, attention per sequence). The tokens of one sequence must be consecutive in the
  // batch, at consecutive positions starting at ctx.size(seq); a sequence appears at most once.
  // Returns the logits ([n][V]) of every token with all_logits, else of the last token of each
  // sequence, in batch order. Observations carry the sequence and its position.
  std::vector<float> decode(std::span<const BatchToken> batch, Context& ctx,
                            const ForwardOptions& opt = {}) const;

  Context make_context(int64_t capacity = 256) const { return Context(*this, capacity); }

  // The device the forward pass runs on (include/epwa/backend.hpp): the CPU, unless the loading
  // options picked a GPU.
  const Backend& backend() const { return *backend_; }

 private:
  ModelConfig config_;
  ModelWeights weights_;
  std::shared_ptr<const void> keep_alive_;
  std::filesystem::path source_;
  std::string format_;
  std::vector<int32_t> moe_layers_;
  std::vector<int32_t> moe_index_;     // per transformer layer: its MoE-layer index, or -1
  std::vector<PathwayRule> pathways_;  // per MoE layer
  std::shared_ptr<const Backend> backend_;
  // Throws Error unless 0 <= moe_layer < the number of MoE layers.
  void check_moe_layer(int32_t moe_layer) const;
  // Runs the model on `b` from now on (its weights prepared there); only before any Context.
  void use_backend(std::shared_ptr<const Backend> b);

  struct Run;  // the tokens of one sequence in a batch
  std::vector<float> run(std::span<const int32_t> tokens, std::span<const Run> runs, Context& ctx,
                         const ForwardOptions& opt) const;
};

}  // namespace epwa
