// The forward pass: the embedding, then per layer the attention block and either the MoE block
// (router observed here) or the dense FFN, then the output head. Each block matches transformers'
// modeling code of the family operation for operation (docs/ARCHITECTURE.md). A batch holds the
// tokens of one or more sequences: the matrix products run over all of them, attention per
// sequence over its own cache.
#include <algorithm>

#include "blocks.hpp"
#include "core/phase_stats.hpp"
#include "epwa/error.hpp"
#include "epwa/model.hpp"

namespace epwa {

struct Model::Run {
  int32_t seq;
  int64_t begin, n, p0;  // rows [begin, begin + n) of the batch, at positions p0 ...
};

std::vector<float> Model::forward(std::span<const int32_t> tokens, Context& ctx,
                                  const ForwardOptions& opt) const {
  check(&ctx.model() == this, "forward: the context belongs to another model");
  if (tokens.empty()) throw Error("forward: no tokens");
  const Run one{0, 0, static_cast<int64_t>(tokens.size()), ctx.size()};
  return run(tokens, {&one, 1}, ctx, opt);
}

std::vector<float> Model::decode(std::span<const BatchToken> batch, Context& ctx,
                                 const ForwardOptions& opt) const {
  check(&ctx.model() == this, "decode: the context belongs to another model");
  if (batch.empty()) throw Error("decode: empty batch");
  std::vector<Run> runs;
  std::vector<int32_t> tokens;
  std::vector<bool> seen(ctx.sequences());
  for (size_t i = 0; i < batch.size(); ++i) {
    const BatchToken& b = batch[i];
    // Messages are built only on failure: this runs for every token of every step.
    if (b.sequence < 0 || b.sequence >= ctx.sequences())
      throw Error("decode: sequence " + std::to_string(b.sequence) +
                  " out of range (the context has " + std::to_string(ctx.sequences()) + ")");
    if (runs.empty() || runs.back().seq != b.sequence) {
      if (seen[b.sequence])
        throw Error("decode: the tokens of sequence " + std::to_string(b.sequence) +
                    " are not consecutive in the batch");
      seen[b.sequence] = true;
      runs.push_back({b.sequence, static_cast<int64_t>(i), 0, ctx.size(b.sequence)});
    }
    Run& r = runs.back();
    if (b.position != r.p0 + r.n)
      throw Error("decode: sequence " + std::to_string(b.sequence) + " expects position " +
                  std::to_string(r.p0 + r.n) + ", got " + std::to_string(b.position));
    ++r.n;
    tokens.push_back(b.token);
  }
  return run(tokens, runs, ctx, opt);
}

std::vector<float> Model::run(std::span<const int32_t> tokens, std::span<const Run> runs,
                              Context& ctx, const ForwardOptions& opt) const {
  const ModelConfig& c = config_;
  const int64_t n = static_cast<int64_t>(tokens.size());
  const auto n_moe = static_cast<int32_t>(moe_layers_.size());
  if (opt.stop_after_router >= n_moe)
    throw Error("router layer " + std::to_string(opt.stop_after_router) +
                " out of range (model has " + std::to_string(n_moe) + " MoE layers)");
  for (int32_t t : tokens)
    if (t < 0 || t >= c.vocab_size)
      throw Error("token id " + std::to_string(t) + " out of range [0, " +
                  std::to_string(c.vocab_size) + ")");
  const int64_t d = c.hidden_size, qdim = int64_t{c.num_heads} * c.head_dim;
  const int64_t kvdim = int64_t{c.num_kv_heads} * c.head_dim;
  int64_t max_positions = 0;
  for (const Run& r : runs) {
    // Positions the model was never trained on give plausible-looking garbage: refused.
    if (r.p0 + r.n > c.max_position_embeddings)
      throw Error("the input reaches position " + std::to_string(r.p0 + r.n) +
                  ", beyond the model's context of " + std::to_string(c.max_position_embeddings) +
                  " positions (max_position_embeddings); shorten it");
    ctx.reserve(r.seq, r.p0 + r.n);
    max_positions = std::max({max_positions, r.p0 + r.n, ctx.capacity(r.seq)});
  }

  const Backend& be = *backend_;
  Context::Scratch& s = *ctx.scratch_;
  // Every activation slot sized before the first block, so that no pointer below dangles.
  float* x = s.buf(be, Slot::X, n * d);
  float* xn = s.buf(be, Slot::Xn, n * d);
  s.buf(be, Slot::Q, n * qdim);
  s.buf(be, Slot::K, n * kvdim);
  s.buf(be, Slot::V, n * kvdim);
  s.buf(be, Slot::Att, n * qdim);
  float* o = s.buf(be, Slot::O, n * d);
  if (n_moe > 0) {
    s.buf(be, Slot::Router, n * c.num_experts);
    s.buf<int32_t>(be, Slot::TopK, n * c.experts_per_token);
    s.buf(be, Slot::TopW, n * c.experts_per_token);
    if (c.shared_expert_intermediate_size > 0) s.buf(be, Slot::Shared, n * d);
  }
  // Sized for the whole cache: a generation fills it without growing anything.
  be.reserve(*s.backend, max_positions);
  auto watched = [&](int32_t m) {
    return opt.watch.empty() || std::find(opt.watch.begin(), opt.watch.end(), m) != opt.watch.end();
  };
  // The router logits and decisions of MoE layer m, to the observer (`also`: a download made in
  // the same wait).
  auto observe = [&](int32_t m, const Download* also = nullptr) {
    block::download_routing(be, c, n, s, also);
    const int64_t ne = c.num_experts, k = c.experts_per_token;
    for (const Run& r : runs)
      for (int64_t i = r.begin; i < r.begin + r.n; ++i)
        opt.observer->observe({m,
                               r.p0 + (i - r.begin),
                               {s.router.data() + i * ne, static_cast<size_t>(ne)},
                               {s.topk.data() + i * k, static_cast<size_t>(k)},
                               {s.topw.data() + i * k, static_cast<size_t>(k)},
                               r.seq,
                               &pathways_[static_cast<size_t>(m)]});
  };
  bool deferred = false;
  std::vector<block::SeqRows>& seqs = s.seqs;  // kept in the scratch: no allocation per token
  seqs.resize(runs.size());

  be.embed(weights_.embed, tokens, x, *s.backend);

  for (int32_t l = 0; l < c.num_layers; ++l) {
    const LayerWeights& L = weights_.layers[l];
    for (size_t r = 0; r < runs.size(); ++r) {
      Context::Seq& q = ctx.at(runs[r].seq);
      const int64_t window = c.layer_window(l);
      seqs[r] = {runs[r].begin,
                 runs[r].n,
                 runs[r].p0,
                 {q.k[l].data(), q.v[l].data(), q.capacity, runs[r].seq, l, window}};
    }
    if (c.mla())
      block::latent_attention(be, c, L, seqs, n, x, s);
    else
      block::attention(be, c, L, seqs, n, x, s);
    {
      EPWA_PHASE("norm");
      be.rmsnorm(x, n, d, L.ffn_norm, c.rms_norm_eps, xn, *s.backend);
    }
    const int32_t m = moe_index_[l];
    if (m < 0) {
      be.ffn(L.dense.gate, L.dense.down, L.dense.up, c.intermediate_size, xn, n, d, o, *s.backend);
    } else {
      block::route(be, c, L, xn, n, s);
      if (opt.observer && watched(m)) {
        // The last MoE layer's routing stays in its slots to the end: observed after the head is
        // queued, so that a device backend waits once per token, not mid-pass.
        if (m == n_moe - 1 && m != opt.stop_after_router)
          deferred = true;
        else
          observe(m);
      }
      if (m == opt.stop_after_router) return {};
      block::moe(be, c, L, xn, n, o, s);
    }
    be.add(x, o, n * d, *s.backend);
  }
  for (const Run& r : runs) ctx.at(r.seq).size = r.p0 + r.n;

  EPWA_PHASE("head");
  // The rows whose logits are returned: all, or the last of each sequence (consecutive when there
  // is one sequence, so the head is one product over them either way).
  std::vector<int64_t>& rows = s.head_rows;
  rows.clear();
  if (opt.all_logits)
    for (int64_t i = 0; i < n; ++i) rows.push_back(i);
  else
    for (const Run& r : runs) rows.push_back(r.begin + r.n - 1);
  const auto rows_out = static_cast<int64_t>(rows.size());
  for (int64_t j = 0; j < rows_out; ++j)
    be.rmsnorm(x + rows[j] * d, 1, d, weights_.final_norm, c.rms_norm_eps, xn + j * d, *s.backend);
  std::vector<float> logits(rows_out * c.vocab_size);
  const TensorView* head[] = {&weights_.head};
  // Host activation memory: the head writes the result itself (no copy of a prompt's logits).
  float* ys[] = {be.host_memory() ? logits.data() : s.buf(be, Slot::Logits, std::ssize(logits))};
  be.linear(head, xn, rows_out, d, ys, *s.backend);
  const Download out{logits.data(), ys[0], logits.size() * sizeof(float)};
  const bool copy_out = !be.host_memory();
  if (deferred)
    observe(n_moe - 1, copy_out ? &out : nullptr);  // one wait for the routing and the logits
  else if (copy_out)
    be.download(out.dst, out.src, out.bytes, *s.backend);
  return logits;
}

}  // namespace epwa
