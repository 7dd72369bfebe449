// Raw PEPI training positions: a model-free cache of what collection saw (docs/PEPI.md,
// "Experiments"), and their featurization.
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "epwa/error.hpp"
#include "epwa/files.hpp"
#include "epwa/pepi.hpp"
#include "epwa/platform.hpp"
#include "epwa/watermark.hpp"

namespace epwa {

namespace {
constexpr char kRawMagic[8] = {'E', 'P', 'W', 'A', 'R', 'A', 'W', '1'};

template <class T>
void write_vec(std::ofstream& out, const std::vector<T>& v) {
  out.write(reinterpret_cast<const char*>(v.data()),
            static_cast<std::streamsize>(v.size() * sizeof(T)));
}
}  // namespace

void PepiRawData::append(const PepiRawData& o) {
  if (o.tokens.empty()) return;
  if (sequences() == 0) {
    *this = o;
    return;
  }
  check(o.k == k && o.num_experts == num_experts && o.vocab_size == vocab_size &&
            o.router_layer == router_layer && o.router_hash == router_hash &&
            o.pathway == pathway,
        "PEPI raw data: cannot append data of another model, layer or k");
  const int64_t base = seq_offsets.back();
  for (size_t s = 1; s < o.seq_offsets.size(); ++s) seq_offsets.push_back(base + o.seq_offsets[s]);
  tokens.insert(tokens.end(), o.tokens.begin(), o.tokens.end());
  top_tokens.insert(top_tokens.end(), o.top_tokens.begin(), o.top_tokens.end());
  top_logprobs.insert(top_logprobs.end(), o.top_logprobs.begin(), o.top_logprobs.end());
  router_logits.insert(router_logits.end(), o.router_logits.begin(), o.router_logits.end());
}

void PepiRawData::save(const std::filesystem::path& file) const {
  nlohmann::json j{{"k", k},
                   {"num_experts", num_experts},
                   {"vocab_size", vocab_size},
                   {"router_layer", router_layer},
                   {"router_hash", router_hash},
                   {"positions", positions()},
                   {"sequences", sequences()}};
  // Older readers: absent = the softmax over all E.
  if (pathway.confidence_over > 0) j["confidence_over"] = pathway.confidence_over;
  if (pathway.sigmoid())
    j["sigmoid_pathway"] = {{"selection_bias", pathway.selection_bias},
                            {"groups", pathway.groups},
                            {"groups_kept", pathway.groups_kept},
                            {"top_k", pathway.top_k},
                            {"renormalize", pathway.renormalize}};
  const std::string h = j.dump();
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  check(out.good(), "PEPI raw data: cannot write " + path_to_utf8(file));
  out.write(kRawMagic, 8);
  const uint32_t hl = static_cast<uint32_t>(h.size());
  out.write(reinterpret_cast<const char*>(&hl), 4);
  out.write(h.data(), hl);
  write_vec(out, tokens);
  write_vec(out, seq_offsets);
  write_vec(out, top_tokens);
  write_vec(out, top_logprobs);
  write_vec(out, router_logits);
  check(out.good(), "PEPI raw data: write to " + path_to_utf8(file) + " failed");
}

PepiRawData PepiRawData::load(const std::filesystem::path& file) {
  const std::string name = "PEPI raw data " + path_to_utf8(file);
  std::ifstream in = open_input_file(file, "PEPI raw data");
  char magic[8] = {};
  uint32_t hl = 0;
  in.read(magic, 8);
  in.read(reinterpret_cast<char*>(&hl), 4);
  check(in.good() && std::memcmp(magic, kRawMagic, 8) == 0 && hl < (1u << 20),
        name + ": bad magic or header");
  std::string h(hl, '\0');
  in.read(h.data(), hl);
  PepiRawData r;
  int64_t n = 0, ns = 0;
  try {
    const auto j = nlohmann::json::parse(h);
    r.k = j.at("k");
    r.num_experts = j.at("num_experts");
    r.vocab_size = j.at("vocab_size");
    r.router_layer = j.at("router_layer");
    r.router_hash = j.at("router_hash");
    r.pathway.confidence_over = j.value("confidence_over", 0);
    if (j.contains("sigmoid_pathway")) {
      const auto& p = j["sigmoid_pathway"];
      r.pathway.selection_bias = p.at("selection_bias").get<std::vector<float>>();
      r.pathway.groups = p.at("groups");
      r.pathway.groups_kept = p.at("groups_kept");
      r.pathway.top_k = p.at("top_k");
      r.pathway.renormalize = p.at("renormalize");
    }
    n = j.at("positions");
    ns = j.at("sequences");
  } catch (const nlohmann::json::exception& e) {
    throw Error(name + ": bad header: " + e.what());
  }
  check(n >= 0 && ns >= 0 && r.k > 0 && r.num_experts > 0 && n < (int64_t{1} << 32),
        name + ": bad sizes");
  auto read = [&](auto& v, int64_t count) {
    v.resize(static_cast<size_t>(count));
    in.read(reinterpret_cast<char*>(v.data()),
            static_cast<std::streamsize>(v.size() * sizeof(v[0])));
    check(in.good(), name + ": truncated");
  };
  read(r.tokens, n);
  read(r.seq_offsets, ns + 1);
  read(r.top_tokens, n * r.k);
  read(r.top_logprobs, n * r.k);
  read(r.router_logits, n * r.num_experts);
  check(r.seq_offsets.front() == 0 && r.seq_offsets.back() == n, name + ": bad sequence offsets");
  return r;
}

PepiDataset featurize_raw(const PepiRawData& raw, const PepiFeaturizer& f,
                          std::span<const size_t> seqs) {
  check(!f.spec().full && f.spec().k <= raw.k, "PEPI raw data holds top-" + std::to_string(raw.k) +
                                                   " distributions: cannot make features " +
                                                   pepi_features_name(f.spec()));
  const size_t k = static_cast<size_t>(raw.k), E = static_cast<size_t>(raw.num_experts);
  PepiDataset d;
  TokenDistribution dist;
  for (size_t s : seqs) {
    check(s < raw.sequences(), "PEPI raw data: sequence index out of range");
    const size_t b = static_cast<size_t>(raw.seq_offsets[s]),
                 e = static_cast<size_t>(raw.seq_offsets[s + 1]);
    for (size_t p = b; p < e; ++p) {
      dist.tokens.assign(raw.top_tokens.begin() + p * k, raw.top_tokens.begin() + (p + 1) * k);
      dist.logprobs.assign(raw.top_logprobs.begin() + p * k,
                           raw.top_logprobs.begin() + (p + 1) * k);
      f.add_row(dist, std::span(raw.tokens).subspan(b, p + 1 - b), d);
      const ExpertChoice ec =
          top1_expert(std::span(raw.router_logits).subspan(p * E, E), raw.pathway);
      d.expert.push_back(ec.expert);
      d.confidence.push_back(ec.confidence);
    }
  }
  return d;
}

}  // namespace epwa
