// The Mixtral-style MoE transformer: load from a HuggingFace folder or a GGUF file, run forward passes
// with a KV cache, and report every router decision to an observer.
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "epwa/config.hpp"
#include "epwa/observe.hpp"
#include "epwa/tensor.hpp"

namespace epwa {

class ThreadPool;
struct LoadOptions;
struct LoadReport;

// Keys and values of every layer for the positions processed so far.
class KvCache {
 public:
  KvCache(const ModelConfig& c, int64_t capacity = 256);
  int64_t size() const { return size_; }
  void clear() { size_ = 0; }
  // Drops positions >= n (n <= size()).
  void truncate(int64_t n);

 private:
  friend class Model;
  void reserve(int64_t positions);
  int64_t kv_dim_, capacity_ = 0, size_ = 0;
  std::vector<std::vector<float>> k_, v_;  // per layer: [capacity x kv_dim]
};

struct ForwardOptions {
  RouterObserver* observer = nullptr;
  bool all_logits = false;  // logits of every position, else only of the last one
  // Stop right after this MoE layer's router (no later layer, no output head): returns no logits and
  // leaves the cache unusable for later positions. -1 = full forward.
  int32_t stop_after_router = -1;
};

// One layer's tensors, as views into mapped files or into buffers the model owns.
struct LayerWeights {
  TensorView attn_norm, wq, wk, wv, wo, ffn_norm, router;
  std::vector<TensorView> w1, w2, w3;  // per expert: gate {I, D}, down {D, I}, up {I, D}
};

struct ModelWeights {
  TensorView embed, final_norm, head;
  std::vector<LayerWeights> layers;
};

class Model {
 public:
  // Loads a HuggingFace folder (config.json + safetensors), a single .safetensors beside a config.json,
  // or a .gguf file. Throws Error naming the file and what is wrong.
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

  // Router matrix of MoE layer `layer` as f32 (E x D, expert-major), for hashing.
  std::vector<float> router_f32(int32_t layer) const;

  // Runs `tokens` at positions cache.size() ... and returns their logits ([n][V] row-major when
  // all_logits, else the last position's V values).
  std::vector<float> forward(std::span<const int32_t> tokens, KvCache& cache,
                             const ForwardOptions& opt = {});

  KvCache make_cache(int64_t capacity = 256) const { return KvCache(config_, capacity); }

 private:
  ModelConfig config_;
  ModelWeights weights_;
  std::shared_ptr<const void> keep_alive_;
  std::filesystem::path source_;
  std::string format_;
  struct Scratch;
  std::unique_ptr<Scratch> scratch_;
};

}  // namespace epwa
