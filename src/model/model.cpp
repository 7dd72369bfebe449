// Model (immutable weights and config) and Context (a sequence's KV cache and scratch).
#include "epwa/model.hpp"

#include <algorithm>
#include <utility>

#include "epwa/error.hpp"
#include "epwa/platform.hpp"
#include "scratch.hpp"
#include "table_row.hpp"

namespace epwa {

Model::Model(ModelConfig config, ModelWeights weights, std::shared_ptr<const void> keep_alive,
             std::filesystem::path source, std::string format)
    : config_(std::move(config)),
      weights_(std::move(weights)),
      keep_alive_(std::move(keep_alive)),
      source_(std::move(source)),
      format_(std::move(format)),
      moe_layers_(config_.moe_layers()),
      moe_index_(config_.num_layers, -1),
      backend_(std::shared_ptr<const Backend>(), &cpu_backend()) {  // not owned: a static
  for (size_t i = 0; i < moe_layers_.size(); ++i)
    moe_index_[moe_layers_[i]] = static_cast<int32_t>(i);
  const ModelConfig& c = config_;
  for (size_t i = 0; i < moe_layers_.size(); ++i) {
    PathwayRule& r = pathways_.emplace_back(PathwayRule::softmax_over(c.confidence_experts()));
    if (c.router_scoring == RouterScoring::Sigmoid) {  // DeepSeek-V3: chosen by score + bias
      r.selection_bias = router_bias_f32(static_cast<int32_t>(i));
      r.groups = c.n_group;
      r.groups_kept = c.topk_group;
      r.top_k = c.experts_per_token;
      r.renormalize = c.norm_topk_prob;
      check(!r.selection_bias.empty() && (c.n_group == 1 || c.group_score == GroupScore::TopTwo),
            "a sigmoid router needs its correction bias and groups scored by their two best");
    }
  }
}

Model::~Model() = default;

void Model::check_moe_layer(int32_t moe_layer) const {
  const auto n = static_cast<int32_t>(moe_layers_.size());
  check(moe_layer >= 0 && moe_layer < n, "router layer " + std::to_string(moe_layer) +
                                             " out of range (model has " + std::to_string(n) +
                                             " MoE layers)");
}

std::vector<float> Model::router_f32(int32_t moe_layer) const {
  check_moe_layer(moe_layer);
  const TensorView& r = weights_.layers[moe_layers_[moe_layer]].router;
  std::vector<float> out(r.numel());
  for (int64_t e = 0; e < r.rows(); ++e) table_row(r, e, out.data() + e * r.cols());
  return out;
}

std::vector<float> Model::router_bias_f32(int32_t moe_layer) const {
  check_moe_layer(moe_layer);
  const TensorView& b = weights_.layers[moe_layers_[moe_layer]].router_bias;
  if (b.data.empty()) return {};
  std::vector<float> out(b.numel());
  table_row(b, 0, out.data());
  return out;
}

const PathwayRule& Model::pathway(int32_t moe_layer) const {
  check_moe_layer(moe_layer);
  return pathways_[static_cast<size_t>(moe_layer)];
}

void Model::use_backend(std::shared_ptr<const Backend> b) {
  // The ops of this model that not every backend has: refused at load, never run wrongly.
  const ModelConfig& c = config_;
  const std::pair<bool, std::string_view> needs[] = {
      {c.attention_sinks || !c.sliding_layers.empty(), "attention sinks and sliding windows"},
      {c.yarn.on() && !c.mla(), "YaRN rope scaling"},
      {c.expert_bias || c.swiglu_limit > 0, "experts with biases and the clamped SwiGLU"},
  };
  const BackendOp ops[] = {BackendOp::SinkAttention, BackendOp::YarnRope, BackendOp::BiasedExperts};
  for (size_t i = 0; i < std::size(ops); ++i)
    check(!needs[i].first || b->supports(ops[i], DType::F32),
          "the " + std::string(b->name()) + " backend does not run " +
              std::string(needs[i].second) + " (" + c.architecture +
              "); run it on the CPU (--cpu)");
  check(!config_.mla() || b->supports(BackendOp::LatentAttention, DType::F32),
        "the " + std::string(b->name()) +
            " backend does not run multi-head latent attention (DeepSeek-V2/V3); run on the CPU "
            "(--cpu)");
  check(config_.plain_routing() || b->supports(BackendOp::GroupedRoute, DType::F32),
        "the " + std::string(b->name()) + " backend does not run this router (" +
            config_.router_rule() + "); run on the CPU (--cpu)");
  // Every tensor the backend's ops read (a tied head is the embedding's data, taken once).
  std::vector<const TensorView*> views;
  for_each_tensor(config_, [&](const TensorSpec& s) {
    const TensorView& t = weight_slot(weights_, s);
    if (!t.data.empty()) views.push_back(&t);
  });
  b->prepare(views);
  backend_ = std::move(b);
}

TensorView& weight_slot(ModelWeights& w, const TensorSpec& s) {
  if (s.layer < 0) {
    switch (s.kind) {
      case TensorKind::Embed:
        return w.embed;
      case TensorKind::OutputNorm:
        return w.final_norm;
      case TensorKind::Output:
        return w.head;
      default:
        break;
    }
    throw Error("tensor " + s.hf + ": not a model-level tensor");
  }
  check(s.layer < static_cast<int32_t>(w.layers.size()), "tensor " + s.hf + ": layer out of range");
  LayerWeights& L = w.layers[s.layer];
  auto expert = [&](std::vector<TensorView>& v) -> TensorView& {
    if (static_cast<int32_t>(v.size()) <= s.expert) v.resize(s.expert + 1);
    return v[s.expert];
  };
  switch (s.kind) {
    case TensorKind::AttnNorm:
      return L.attn_norm;
    case TensorKind::AttnQ:
      return L.wq;
    case TensorKind::AttnK:
      return L.wk;
    case TensorKind::AttnV:
      return L.wv;
    case TensorKind::AttnOut:
      return L.wo;
    case TensorKind::AttnQBias:
      return L.bq;
    case TensorKind::AttnKBias:
      return L.bk;
    case TensorKind::AttnVBias:
      return L.bv;
    case TensorKind::AttnQNorm:
      return L.q_norm;
    case TensorKind::AttnKNorm:
      return L.k_norm;
    case TensorKind::AttnOutBias:
      return L.bo;
    case TensorKind::AttnSinks:
      return L.sinks;
    case TensorKind::ExpGateBias:
      return expert(L.b1);
    case TensorKind::ExpDownBias:
      return expert(L.b2);
    case TensorKind::ExpUpBias:
      return expert(L.b3);
    case TensorKind::AttnQA:
      return L.wq_a;
    case TensorKind::AttnQANorm:
      return L.q_a_norm;
    case TensorKind::AttnQB:
      return L.wq_b;
    case TensorKind::AttnKvA:
      return L.wkv_a;
    case TensorKind::AttnKvANorm:
      return L.kv_a_norm;
    case TensorKind::AttnKvB:
      return L.wkv_b;
    case TensorKind::RouterBias:
      return L.router_bias;
    case TensorKind::FfnNorm:
      return L.ffn_norm;
    case TensorKind::Router:
      return L.router;
    case TensorKind::ExpGate:
      return expert(L.w1);
    case TensorKind::ExpDown:
      return expert(L.w2);
    case TensorKind::ExpUp:
      return expert(L.w3);
    case TensorKind::ShexpGateInp:
      return L.shared_gate_inp;
    case TensorKind::ShexpGate:
      return L.shared.gate;
    case TensorKind::ShexpDown:
      return L.shared.down;
    case TensorKind::ShexpUp:
      return L.shared.up;
    case TensorKind::FfnGate:
      return L.dense.gate;
    case TensorKind::FfnDown:
      return L.dense.down;
    case TensorKind::FfnUp:
      return L.dense.up;
    default:
      break;
  }
  throw Error("tensor " + s.hf + ": not a layer tensor");
}

const TensorView& weight_slot(const ModelWeights& w, const TensorSpec& s) {
  // The const lookup never grows the expert lists.
  if (s.expert >= 0 && s.layer >= 0 && s.layer < static_cast<int32_t>(w.layers.size())) {
    const LayerWeights& L = w.layers[s.layer];
    const auto& v = s.kind == TensorKind::ExpGate       ? L.w1
                    : s.kind == TensorKind::ExpDown     ? L.w2
                    : s.kind == TensorKind::ExpUp       ? L.w3
                    : s.kind == TensorKind::ExpGateBias ? L.b1
                    : s.kind == TensorKind::ExpDownBias ? L.b2
                                                        : L.b3;
    check(s.expert < static_cast<int32_t>(v.size()), "tensor " + s.hf + ": expert missing");
    return v[s.expert];
  }
  return weight_slot(const_cast<ModelWeights&>(w), s);
}

namespace {
std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}
}  // namespace

void check_weights(const ModelConfig& c, const ModelWeights& w) {
  check(static_cast<int32_t>(w.layers.size()) == c.num_layers,
        "model has " + std::to_string(w.layers.size()) + " layers, config says " +
            std::to_string(c.num_layers));
  for (size_t l = 0; l < w.layers.size(); ++l) {
    const LayerWeights& L = w.layers[l];
    if (!c.is_moe_layer(static_cast<int32_t>(l))) continue;
    check(
        static_cast<int32_t>(L.w1.size()) == c.num_experts && L.w2.size() == L.w1.size() &&
            L.w3.size() == L.w1.size(),
        "layer " + std::to_string(l) + ": expected " + std::to_string(c.num_experts) + " experts");
    if (c.expert_bias)
      check(L.b1.size() == L.w1.size() && L.b2.size() == L.w1.size() && L.b3.size() == L.w1.size(),
            "layer " + std::to_string(l) + ": expected the biases of " +
                std::to_string(c.num_experts) + " experts");
  }
  for_each_tensor(c, [&](const TensorSpec& s) {
    const TensorView& t = weight_slot(w, s);
    if (s.kind == TensorKind::Output && t.data.data() == w.embed.data.data()) return;  // tied head
    check(t.shape == s.shape, "tensor " + (t.name.empty() ? s.hf : t.name) + " has shape " +
                                  shape_str(t.shape) + ", expected " + shape_str(s.shape));
  });
}

// ---- Context ----

Context::Context(const Model& model, int64_t capacity, int32_t sequences)
    : model_(&model),
      k_dim_(model.config().kv_cache_k_dim()),
      v_dim_(model.config().kv_cache_v_dim()),
      scratch_(std::make_unique<Scratch>()) {
  check(sequences >= 1, "context: needs at least one sequence, got " + std::to_string(sequences));
  scratch_->backend = model.backend().make_scratch(model.config());
  seqs_.resize(sequences);
  for (int32_t q = 0; q < sequences; ++q) {
    seqs_[q].k.resize(model.config().num_layers);
    seqs_[q].v.resize(model.config().num_layers);
    reserve(q, std::max<int64_t>(capacity, 1));
  }
}

Context::Context(const Context& other)
    : model_(other.model_),
      k_dim_(other.k_dim_),
      v_dim_(other.v_dim_),
      seqs_(other.seqs_),
      scratch_(std::make_unique<Scratch>()) {
  scratch_->backend = model_->backend().copy_scratch(*other.scratch_->backend, model_->config());
}

Context::~Context() = default;

const Context::Seq& Context::at(int32_t seq) const {
  // Called per layer and token: the message is built only on failure.
  if (seq < 0 || seq >= sequences())
    throw Error("context: sequence " + std::to_string(seq) + " out of range (the context has " +
                std::to_string(sequences()) + ")");
  return seqs_[seq];
}

void Context::reserve(int32_t seq, int64_t positions) {
  Seq& q = at(seq);
  if (positions <= q.capacity) return;
  q.capacity = std::max(positions, q.capacity * 2);
  if (model_->backend().keeps_kv_cache()) return;  // its rows live in the backend's scratch
  const ModelConfig& c = model_->config();
  for (auto [side, dim] : {std::pair{&q.k, k_dim_}, std::pair{&q.v, v_dim_}}) {
    if (dim == 0) continue;
    for (size_t l = 0; l < side->size(); ++l) {
      // A sliding layer's rows are a ring of its window (position p in row p % window).
      const int64_t window = c.layer_window(static_cast<int32_t>(l));
      const int64_t rows = window > 0 ? std::min(q.capacity, window) : q.capacity;
      auto& buf = (*side)[l];
      if (static_cast<int64_t>(buf.size()) >= rows * dim) continue;
      // Advised before the new part is zero-filled, so that its first touch can fault huge pages.
      buf.reserve(static_cast<size_t>(rows * dim));
      advise_huge_pages(buf.data(), buf.capacity() * sizeof(float));
      buf.resize(static_cast<size_t>(rows * dim));
    }
  }
}

int64_t Context::kv_bytes_per_position(int32_t seq) const {
  const Seq& q = at(seq);
  int64_t bytes = 0;
  for (const auto* side : {&q.k, &q.v})
    for (const auto& buf : *side) bytes += static_cast<int64_t>(buf.size() * sizeof(float));
  return q.capacity > 0 ? bytes / q.capacity : 0;
}

int64_t Context::kv_bytes(int32_t layer, int32_t seq) const {
  const Seq& q = at(seq);
  check(layer >= 0 && layer < static_cast<int32_t>(q.k.size()),
        "context: layer " + std::to_string(layer) + " out of range");
  return static_cast<int64_t>((q.k[layer].size() + q.v[layer].size()) * sizeof(float));
}

void Context::truncate(int64_t n, int32_t seq) {
  Seq& q = at(seq);
  check(n >= 0 && n <= q.size, "KV cache: cannot truncate " + std::to_string(q.size) +
                                   " positions to " + std::to_string(n));
  const ModelConfig& c = model_->config();
  if (!c.sliding_layers.empty() && n > 0 && n < q.size - 1 && q.size > c.sliding_window)
    throw Error("KV cache: cannot truncate " + std::to_string(q.size) + " positions to " +
                std::to_string(n) + ": the sliding-window layers keep only the last " +
                std::to_string(c.sliding_window));
  q.size = n;
}

}  // namespace epwa
