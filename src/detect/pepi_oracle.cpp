// The PEPI oracle: multinomial logistic regression over sparse features, trained with AdaGrad
// (per-weight step sizes suit the very uneven token frequencies), saved as a versioned binary.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>

#include "epwa/error.hpp"
#include "epwa/files.hpp"
#include "epwa/half.hpp"
#include "epwa/pepi.hpp"
#include "epwa/platform.hpp"

namespace epwa {

namespace {
constexpr char kMagic[8] = {'E', 'P', 'W', 'A', 'P', 'E', 'P', 'I'};
const float kBucketEdges[] = {0.0f, 0.4f, 0.6f, 0.8f, 0.9f, 1.0001f};

void softmax_inplace(std::span<float> z) {
  float mx = z[0];
  for (float x : z) mx = std::max(mx, x);
  float s = 0;
  for (float& x : z) s += (x = std::exp(x - mx));
  for (float& x : z) x /= s;
}

nlohmann::json info_json(const OracleInfo& i) {
  return {
      {"router_hash", i.router_hash},
      {"router_layer", i.router_layer},
      {"num_experts", i.num_experts},
      {"vocab_size", i.vocab_size},
      {"features", pepi_features_name(i.features)},
      {"k", i.features.k},
      {"model_source", i.model_source},
      {"corpus", i.corpus},
      {"token_table_width", i.token_table.size() / static_cast<size_t>(std::max(i.vocab_size, 1))}};
}
}  // namespace

nlohmann::json to_json(const OracleMetrics& m) {
  nlohmann::json b = nlohmann::json::array();
  for (const auto& x : m.by_confidence)
    b.push_back({{"lo", x.lo}, {"hi", std::min(x.hi, 1.0f)}, {"n", x.n}, {"accuracy", x.accuracy}});
  return {{"train_size", m.train_size}, {"heldout_size", m.heldout_size},
          {"accuracy", m.accuracy},     {"majority_accuracy", m.majority_accuracy},
          {"log_loss", m.log_loss},     {"by_confidence", b},
          {"confusion", m.confusion}};
}

Oracle::Oracle(OracleInfo info, int32_t hidden)
    : info_(std::move(info)),
      feat_(info_.features, info_.vocab_size, info_.token_table),
      hidden_(hidden) {
  check(info_.num_experts >= 1, "oracle: the number of experts must be positive");
  check(hidden >= 0 && hidden <= 4096, "oracle: hidden width must be in [0, 4096]");
  const size_t E = static_cast<size_t>(info_.num_experts), H = static_cast<size_t>(hidden);
  weights_.assign(static_cast<size_t>(feat_.dimension()) * E, 0.0f);
  bias_.assign(E, 0.0f);
  w1_.assign(static_cast<size_t>(feat_.hidden_input_dimension()) * H, 0.0f);
  b1_.assign(H, 0.0f);
  w2_.assign(H * E, 0.0f);
}

void Oracle::logits(std::span<const uint32_t> index, std::span<const float> value,
                    std::span<float> z, std::span<float> a) const {
  const size_t E = bias_.size(), H = b1_.size();
  const uint32_t deep = feat_.hidden_input_dimension();
  std::copy(bias_.begin(), bias_.end(), z.begin());
  std::copy(b1_.begin(), b1_.end(), a.begin());
  for (size_t j = 0; j < index.size(); ++j) {
    check(index[j] < feat_.dimension(), "oracle: feature index out of range");
    const float v = value[j];
    const float* w = &weights_[static_cast<size_t>(index[j]) * E];
    for (size_t e = 0; e < E; ++e) z[e] += w[e] * v;
    if (H > 0 && index[j] < deep) {
      const float* w1 = &w1_[static_cast<size_t>(index[j]) * H];
      for (size_t i = 0; i < H; ++i) a[i] += w1[i] * v;
    }
  }
  for (size_t i = 0; i < H; ++i) {
    if (a[i] <= 0.0f) continue;  // ReLU
    const float* w2 = &w2_[i * E];
    for (size_t e = 0; e < E; ++e) z[e] += w2[e] * a[i];
  }
}

std::vector<float> Oracle::probabilities(std::span<const uint32_t> index,
                                         std::span<const float> value) const {
  std::vector<float> z(bias_.size()), a(b1_.size());
  logits(index, value, z, a);
  softmax_inplace(z);
  return z;
}

RouterRecord Oracle::predict(const TokenDistribution& d, int32_t token, int32_t prev) const {
  const int32_t h[2] = {prev, token};
  return predict(d, std::span<const int32_t>(h).subspan(token < 0 ? 2 : prev < 0 ? 1 : 0));
}

RouterRecord Oracle::predict(const TokenDistribution& d, std::span<const int32_t> history) const {
  PepiDataset row;
  feat_.add_row(d, history, row);
  const auto p = probabilities(row.index, row.value);
  const auto it = std::max_element(p.begin(), p.end());  // first max: ties -> lower index
  return {static_cast<int32_t>(it - p.begin()), *it};
}

OracleMetrics Oracle::evaluate(const PepiDataset& data) const {
  const int32_t E = info_.num_experts;
  OracleMetrics m;
  m.heldout_size = data.rows();
  m.confusion.assign(static_cast<size_t>(E), std::vector<int64_t>(static_cast<size_t>(E), 0));
  const size_t nb = std::size(kBucketEdges) - 1;
  std::vector<int64_t> bn(nb, 0), bok(nb, 0);
  int64_t ok = 0;
  double loss = 0;
  std::vector<float> p(static_cast<size_t>(E)), a(b1_.size());
  for (int64_t r = 0; r < data.rows(); ++r) {
    const size_t b = static_cast<size_t>(data.offsets[r]),
                 e = static_cast<size_t>(data.offsets[r + 1]);
    logits(std::span(data.index).subspan(b, e - b), std::span(data.value).subspan(b, e - b), p, a);
    softmax_inplace(p);
    const int32_t pred = static_cast<int32_t>(std::max_element(p.begin(), p.end()) - p.begin());
    const int32_t y = data.expert[static_cast<size_t>(r)];
    check(y >= 0 && y < E, "oracle: label " + std::to_string(y) + " outside the experts");
    ++m.confusion[static_cast<size_t>(y)][static_cast<size_t>(pred)];
    ok += pred == y;
    loss -= std::log(std::max(p[static_cast<size_t>(y)], 1e-12f));
    const float c = data.confidence[static_cast<size_t>(r)];
    for (size_t k = 0; k < nb; ++k)
      if (c >= kBucketEdges[k] && c < kBucketEdges[k + 1]) {
        ++bn[k];
        bok[k] += pred == y;
      }
  }
  const double n = std::max<int64_t>(data.rows(), 1);
  m.accuracy = ok / n;
  m.log_loss = loss / n;
  for (size_t k = 0; k < nb; ++k)
    m.by_confidence.push_back({kBucketEdges[k], kBucketEdges[k + 1], bn[k],
                               bn[k] ? static_cast<double>(bok[k]) / bn[k] : 0.0});
  return m;
}

Oracle Oracle::train(const OracleInfo& info, const PepiDataset& train, const PepiDataset& heldout,
                     const OracleTrainOptions& opt) {
  check(train.rows() > 0, "oracle: no training data");
  Oracle o(info, opt.hidden);
  const size_t E = static_cast<size_t>(info.num_experts), H = static_cast<size_t>(opt.hidden);
  const uint32_t deep = o.feat_.hidden_input_dimension();
  for (int32_t y : train.expert)
    check(y >= 0 && static_cast<size_t>(y) < E, "oracle: training label outside the experts");
  uint64_t rng = opt.seed * 0x9e3779b97f4a7c15ull + 1;
  auto next = [&] {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
  };
  auto uniform = [&](float scale) {  // in [-scale, scale)
    return scale * (static_cast<float>(next() >> 40) / static_cast<float>(1ull << 23) - 1.0f);
  };
  // Random hidden weights break the symmetry; the linear part starts at zero.
  for (float& w : o.w1_) w = uniform(0.1f);
  for (float& w : o.w2_) w = uniform(1.0f / std::sqrt(static_cast<float>(std::max<size_t>(H, 1))));
  // AdaGrad accumulators.
  std::vector<float> gw(o.weights_.size(), 0.0f), gb(E, 0.0f), g1(o.w1_.size(), 0.0f), gb1(H, 0.0f),
      g2(o.w2_.size(), 0.0f);
  std::vector<int64_t> order(static_cast<size_t>(train.rows()));
  std::iota(order.begin(), order.end(), int64_t{0});
  const float lr = static_cast<float>(opt.learning_rate), l2 = static_cast<float>(opt.l2);
  const float lrh = static_cast<float>(opt.hidden_learning_rate);
  auto step = [](float& w, float& acc, float g, float rate) {
    acc += g * g;
    w -= rate * g / (std::sqrt(acc) + 1e-6f);
  };
  std::vector<float> z(E), a(H), dh(H);
  for (int32_t ep = 0; ep < opt.epochs; ++ep) {
    for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[next() % i]);
    double loss = 0;
    int64_t ok = 0;
    for (int64_t r : order) {
      const size_t b = static_cast<size_t>(train.offsets[r]),
                   e = static_cast<size_t>(train.offsets[r + 1]);
      const auto idx = std::span(train.index).subspan(b, e - b);
      const auto val = std::span(train.value).subspan(b, e - b);
      o.logits(idx, val, z, a);
      softmax_inplace(z);
      const size_t y = static_cast<size_t>(train.expert[static_cast<size_t>(r)]);
      loss -= std::log(std::max(z[y], 1e-12f));
      ok += static_cast<size_t>(std::max_element(z.begin(), z.end()) - z.begin()) == y;
      z[y] -= 1.0f;  // gradient of the log loss wrt the logits
      for (size_t i = 0; i < H; ++i) {
        dh[i] = 0.0f;
        if (a[i] <= 0.0f) continue;
        float* w2 = &o.w2_[i * E];
        float* acc = &g2[i * E];
        for (size_t k = 0; k < E; ++k) {
          dh[i] += w2[k] * z[k];
          step(w2[k], acc[k], z[k] * a[i], lrh);
        }
      }
      for (size_t j = 0; j < idx.size(); ++j) {
        const size_t row = idx[j];
        const float v = val[j];
        float* w = &o.weights_[row * E];
        float* acc = &gw[row * E];
        for (size_t k = 0; k < E; ++k) step(w[k], acc[k], z[k] * v + l2 * w[k], lr);
        if (H > 0 && idx[j] < deep) {
          float* w1 = &o.w1_[row * H];
          float* acc1 = &g1[row * H];
          for (size_t i = 0; i < H; ++i)
            if (dh[i] != 0.0f) step(w1[i], acc1[i], dh[i] * v + l2 * w1[i], lrh);
        }
      }
      for (size_t k = 0; k < E; ++k) step(o.bias_[k], gb[k], z[k], lr);
      for (size_t i = 0; i < H; ++i)
        if (dh[i] != 0.0f) step(o.b1_[i], gb1[i], dh[i], lrh);
    }
    if (opt.progress) {
      std::string line = "epoch " + std::to_string(ep + 1) + "/" + std::to_string(opt.epochs) +
                         ": train loss " + std::to_string(loss / order.size()) + ", train acc " +
                         std::to_string(static_cast<double>(ok) / order.size());
      if (heldout.rows() > 0)
        line += ", held-out acc " + std::to_string(o.evaluate(heldout).accuracy);
      opt.progress(line);
    }
  }
  // The hidden layer is stored as f16: round now so that the metrics are those of the file.
  for (auto* v : {&o.w1_, &o.b1_, &o.w2_})
    for (float& w : *v) w = f16_to_f32(f32_to_f16(w));
  o.metrics_ = o.evaluate(heldout);
  o.metrics_.heldout_size = heldout.rows();
  o.metrics_.train_size = train.rows();
  std::vector<int64_t> counts(E, 0);
  for (int32_t y : train.expert) ++counts[static_cast<size_t>(y)];
  const size_t maj =
      static_cast<size_t>(std::max_element(counts.begin(), counts.end()) - counts.begin());
  int64_t hm = 0;
  for (int32_t y : heldout.expert) hm += static_cast<size_t>(y) == maj;
  o.metrics_.majority_accuracy = heldout.rows() ? static_cast<double>(hm) / heldout.rows() : 0.0;
  return o;
}

void Oracle::check_router_hash(std::string_view model_hash) const {
  if (model_hash != info_.router_hash)
    throw Error("oracle was trained for router hash " + info_.router_hash +
                " but the model's IRSH-v1 is " + std::string(model_hash) +
                " (train an oracle for this model with epwa train-oracle)");
}

void Oracle::save(const std::filesystem::path& file) const {
  nlohmann::json h = info_json(info_);
  h["format"] = "epwa-pepi-oracle";
  h["version"] = kFormatVersion;
  h["classifier"] = classifier();
  h["hidden"] = hidden_;
  h["hidden_weights"] = "f16";
  h["dimension"] = feat_.dimension();
  h["metrics"] = to_json(metrics_);
  const std::string hs = h.dump();
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  check(out.good(), "oracle: cannot write " + path_to_utf8(file));
  auto u32 = [&](uint32_t v) {
    const unsigned char b[4] = {static_cast<unsigned char>(v), static_cast<unsigned char>(v >> 8),
                                static_cast<unsigned char>(v >> 16),
                                static_cast<unsigned char>(v >> 24)};
    out.write(reinterpret_cast<const char*>(b), 4);
  };
  out.write(kMagic, 8);
  u32(kFormatVersion);
  u32(static_cast<uint32_t>(hs.size()));
  out.write(hs.data(), static_cast<std::streamsize>(hs.size()));
  // f32 little-endian (every platform we build for is little-endian; static_assert below).
  static_assert(std::endian::native == std::endian::little);
  out.write(reinterpret_cast<const char*>(weights_.data()),
            static_cast<std::streamsize>(weights_.size() * 4));
  out.write(reinterpret_cast<const char*>(bias_.data()),
            static_cast<std::streamsize>(bias_.size() * 4));
  for (const auto* v : {&w1_, &b1_, &w2_}) {
    std::vector<uint16_t> half(v->size());
    for (size_t i = 0; i < half.size(); ++i) half[i] = f32_to_f16((*v)[i]);
    out.write(reinterpret_cast<const char*>(half.data()),
              static_cast<std::streamsize>(half.size() * 2));
  }
  // The ",emb" token table last (f32): the loader needs it before it can size the rest.
  const auto& table = info_.token_table;
  out.write(reinterpret_cast<const char*>(table.data()),
            static_cast<std::streamsize>(table.size() * 4));
  check(out.good(), "oracle: write to " + path_to_utf8(file) + " failed");
}

Oracle Oracle::load(const std::filesystem::path& file) {
  const std::string name = "oracle " + path_to_utf8(file);
  const std::string data = read_input_file(file, "oracle");
  check(data.size() >= 16 && std::memcmp(data.data(), kMagic, 8) == 0,
        name + ": not a PEPI oracle (bad magic)");
  auto u32 = [&](size_t at) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(data[at + i]);
    return v;
  };
  const uint32_t version = u32(8), hlen = u32(12);
  check(version == 1 || version == kFormatVersion,
        name + ": format version " + std::to_string(version) + " is not supported (expected 1 or " +
            std::to_string(kFormatVersion) + ")");
  check(hlen <= data.size() - 16, name + ": truncated header");
  nlohmann::json h;
  OracleInfo info;
  uint32_t dim = 0;
  int32_t hidden = 0;
  size_t table_width = 0;
  try {
    h = nlohmann::json::parse(data.substr(16, hlen));
    info.router_hash = h.at("router_hash").get<std::string>();
    info.router_layer = h.at("router_layer").get<int32_t>();
    info.num_experts = h.at("num_experts").get<int32_t>();
    info.vocab_size = h.at("vocab_size").get<int32_t>();
    info.features = parse_pepi_features(h.at("features").get<std::string>());
    info.model_source = h.value("model_source", "");
    info.corpus = h.value("corpus", "");
    dim = h.at("dimension").get<uint32_t>();
    table_width = h.value("token_table_width", size_t{0});
    if (version >= 2) {
      hidden = h.at("hidden").get<int32_t>();
      const std::string kind = h.at("classifier").get<std::string>();
      check(kind == (hidden > 0 ? "wide-deep" : "multinomial-logistic-regression"),
            "classifier '" + kind + "' does not match hidden width " + std::to_string(hidden));
      check(h.value("hidden_weights", "f16") == "f16", "hidden_weights must be f16");
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error(name + ": bad header: " + e.what());
  } catch (const Error& e) {
    throw Error(name + ": bad header: " + e.what());
  }
  check(info.num_experts >= 1 && info.num_experts <= 4096 && info.vocab_size >= 2 &&
            info.vocab_size <= (1 << 24),
        name + ": implausible num_experts or vocab_size in the header");
  check(hidden >= 0 && hidden <= 4096,
        name + ": implausible hidden width " + std::to_string(hidden));
  check(table_width <= 256, name + ": implausible token_table_width");
  const size_t table_bytes = table_width * static_cast<size_t>(info.vocab_size) * 4;
  check(table_bytes <= data.size() - 16 - hlen, name + ": truncated token table");
  info.token_table.resize(table_bytes / 4);
  std::memcpy(info.token_table.data(), data.data() + data.size() - table_bytes, table_bytes);
  Oracle o(info, hidden);
  check(o.feat_.dimension() == dim, name + ": header dimension " + std::to_string(dim) +
                                        " does not match features " +
                                        pepi_features_name(info.features));
  const size_t need = (o.weights_.size() + o.bias_.size()) * 4 +
                      (o.w1_.size() + o.b1_.size() + o.w2_.size()) * 2 + table_bytes;
  check(data.size() - 16 - hlen == need, name + ": weight block is " +
                                             std::to_string(data.size() - 16 - hlen) +
                                             " bytes, expected " + std::to_string(need));
  std::memcpy(o.weights_.data(), data.data() + 16 + hlen, o.weights_.size() * 4);
  size_t at = 16 + hlen + o.weights_.size() * 4;
  std::memcpy(o.bias_.data(), data.data() + at, o.bias_.size() * 4);
  at += o.bias_.size() * 4;
  for (auto* v : {&o.w1_, &o.b1_, &o.w2_})
    for (float& w : *v) {
      uint16_t x;
      std::memcpy(&x, data.data() + at, 2);
      at += 2;
      w = f16_to_f32(x);
    }
  for (const auto* v : {&o.weights_, &o.bias_, &o.w1_, &o.b1_, &o.w2_})
    for (float w : *v) check(std::isfinite(w), name + ": non-finite weight");
  if (h.contains("metrics")) {
    const auto& m = h["metrics"];
    o.metrics_.train_size = m.value("train_size", int64_t{0});
    o.metrics_.heldout_size = m.value("heldout_size", int64_t{0});
    o.metrics_.accuracy = m.value("accuracy", 0.0);
    o.metrics_.majority_accuracy = m.value("majority_accuracy", 0.0);
    o.metrics_.log_loss = m.value("log_loss", 0.0);
    if (m.contains("by_confidence"))
      for (const auto& b : m["by_confidence"])
        o.metrics_.by_confidence.push_back({b.value("lo", 0.0f), b.value("hi", 1.0f),
                                            b.value("n", int64_t{0}), b.value("accuracy", 0.0)});
    if (m.contains("confusion"))
      o.metrics_.confusion = m["confusion"].get<std::vector<std::vector<int64_t>>>();
  }
  return o;
}

}  // namespace epwa
