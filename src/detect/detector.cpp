// The gray-box detector: align each generated token with the router decision of the position
// before it (and, with CTX-v1 context buckets, the token there), drop repeated (context, token)
// pairs, then score with the chosen method.
#include <algorithm>
#include <cmath>
#include <unordered_set>

#include "epwa/detect.hpp"
#include "epwa/error.hpp"

namespace epwa {

std::vector<RouterRecord> records_from_logits(std::span<const float> logits, int32_t num_experts) {
  check(num_experts > 0, "router logits: the number of experts must be positive");
  check(logits.size() % static_cast<size_t>(num_experts) == 0,
        "router logits: " + std::to_string(logits.size()) + " values are not a multiple of " +
            std::to_string(num_experts) + " experts");
  std::vector<RouterRecord> out(logits.size() / static_cast<size_t>(num_experts));
  for (size_t p = 0; p < out.size(); ++p)
    out[p] = top1_expert(
        logits.subspan(p * static_cast<size_t>(num_experts), static_cast<size_t>(num_experts)));
  return out;
}

std::string_view detect_method_name(DetectMethod m) {
  switch (m) {
    case DetectMethod::Full:
      return "full";
    case DetectMethod::Cspv:
      return "cspv";
    case DetectMethod::Weighted:
      return "weighted";
    case DetectMethod::Pepi:
      return "pepi";
  }
  return "?";
}

std::string_view detect_scheme_name(DetectScheme s) {
  return s == DetectScheme::Exp ? "exp" : "green";
}

DetectScheme detect_scheme_from_name(std::string_view name) {
  if (name == "green") return DetectScheme::Green;
  if (name == "exp") return DetectScheme::Exp;
  throw Error("unknown watermark scheme '" + std::string(name) + "' (expected green or exp)");
}

DetectScheme detect_scheme_for(WatermarkMode mode) {
  return mode == WatermarkMode::Exp ? DetectScheme::Exp : DetectScheme::Green;
}

DetectMethod detect_method_from_name(std::string_view name) {
  for (DetectMethod m :
       {DetectMethod::Full, DetectMethod::Cspv, DetectMethod::Weighted, DetectMethod::Pepi})
    if (detect_method_name(m) == name) return m;
  throw Error("unknown detection method '" + std::string(name) +
              "' (expected full, cspv, weighted or pepi)");
}

Detector::Detector(std::shared_ptr<const GreenLists> lists, DetectOptions opt)
    : lists_(std::move(lists)), opt_(opt) {
  check(lists_ != nullptr, "detector: no green lists");
  check(std::isfinite(opt_.threshold), "detector: the threshold must be finite");
  check(opt_.method != DetectMethod::Cspv || opt_.sample > 0,
        "detector: method cspv needs a sample size N > 0");
  check(std::isfinite(opt_.min_entropy) && opt_.min_entropy >= 0,
        "detector: min_entropy must be a finite number of nats >= 0");
  if (opt_.scheme == DetectScheme::Exp) {
    check(opt_.method == DetectMethod::Full || opt_.method == DetectMethod::Pepi,
          "detector: the exp scheme is detected with method full or pepi");
    check(opt_.min_entropy == 0 && lists_->context_buckets() == 0,
          "detector: the exp scheme takes neither min_entropy nor context buckets");
  }
}

void Detector::decide(DetectionResult& r) {
  if (r.n < 10) {
    r.detected = false;
    r.reason = "too short";
  } else {
    r.detected = r.z > r.threshold;
    r.reason = r.detected ? "z above threshold" : "z not above threshold";
  }
}

void Detector::set_expert_predictor(std::shared_ptr<ExpertPredictor> predictor) {
  predictor_ = std::move(predictor);
}

namespace {

struct Candidate {
  int64_t position;
  int32_t token, expert;
  float confidence;
  bool green;
};

}  // namespace

DetectionResult Detector::detect(const DetectionInput& in) const {
  const GreenLists& gl = *lists_;
  const int64_t T = static_cast<int64_t>(in.tokens.size());
  check(in.prompt_tokens >= 0 && in.prompt_tokens <= T,
        "detect: prompt length " + std::to_string(in.prompt_tokens) +
            " is outside the sequence of " + std::to_string(T) + " tokens");
  std::vector<RouterRecord> predicted;
  std::span<const RouterRecord> records = in.records;
  if (opt_.method == DetectMethod::Pepi) {
    check(predictor_ != nullptr, "detect: method pepi needs an expert predictor");
    predicted = predictor_->predict(in.tokens, in.prompt_tokens);
    records = predicted;
  }
  const int64_t start =
      std::max<int64_t>(in.prompt_tokens, 1);  // token 0 has no position before it
  if (T > start)
    check(static_cast<int64_t>(records.size()) >= T - 1,
          "detect: " + std::to_string(records.size()) + " router records for " + std::to_string(T) +
              " tokens (need one per position before the last)");
  const bool by_entropy = opt_.min_entropy > 0;
  if (by_entropy && T > start)
    check(static_cast<int64_t>(in.entropy.size()) >= T - 1,
          "detect: min_entropy needs the entropy of every position before the last (got " +
              std::to_string(in.entropy.size()) + " for " + std::to_string(T) + " tokens)");

  DetectionResult r;
  r.method = detect_method_name(opt_.method);
  r.threshold = opt_.threshold;
  if (opt_.scheme == DetectScheme::Exp) return score_exp(in, records, start, std::move(r));
  r.gamma = gl.gamma();
  r.min_entropy = opt_.min_entropy;
  const int32_t V = gl.vocab_size(), E = gl.num_experts(), H = gl.context_buckets();
  const int64_t C = gl.num_contexts();

  // Dedup on (context, token): one bit per pair, or a hash set where C x V bits would be large
  // (context buckets).
  const bool dense = C * V <= (int64_t{1} << 26);
  std::vector<uint64_t> seen;
  std::unordered_set<uint64_t> seen_sparse;
  if (!opt_.count_repeats && dense) seen.assign((static_cast<size_t>(C) * V + 63) / 64, 0);
  std::vector<std::span<const uint64_t>> bits_of(static_cast<size_t>(E));  // H = 0: on first use
  std::vector<Candidate> cand;
  cand.reserve(static_cast<size_t>(std::max<int64_t>(T - start, 0)));
  std::vector<TokenDetail> detail;
  for (int64_t t = start; t < T; ++t) {
    const int32_t tok = in.tokens[static_cast<size_t>(t)];
    const RouterRecord& rec = records[static_cast<size_t>(t - 1)];
    // Plain ifs: no message is built unless the input is bad.
    if (tok < 0 || tok >= V)
      throw Error("detect: token " + std::to_string(tok) + " at position " + std::to_string(t) +
                  " is outside the vocabulary of " + std::to_string(V));
    if (rec.expert < 0 || rec.expert >= E)
      throw Error("detect: router record of position " + std::to_string(t - 1) + " names expert " +
                  std::to_string(rec.expert) + " of " + std::to_string(E));
    int32_t ctx = rec.expert;
    std::span<const uint64_t> bits;
    if (H > 0) {
      ctx = gl.context(rec.expert, in.tokens[static_cast<size_t>(t - 1)]);
      bits = gl.bits(ctx);
    } else {
      std::span<const uint64_t>& b = bits_of[static_cast<size_t>(rec.expert)];
      if (b.empty()) b = gl.bits(rec.expert);
      bits = b;
    }
    const bool green = (bits[static_cast<size_t>(tok) >> 6] >> (tok & 63)) & 1u;
    // Below the entropy threshold the step carried no bias (selective generation) or too little
    // choice to show one: not scored, and not counted as seen by the dedup.
    if (by_entropy && in.entropy[static_cast<size_t>(t - 1)] < opt_.min_entropy) {
      ++r.low_entropy_skipped;
      if (opt_.tokens_detail)
        detail.push_back({t, tok, rec.expert, rec.confidence, green, false, ""});
      continue;
    }
    bool repeat = false;
    if (!opt_.count_repeats) {
      const size_t pair = static_cast<size_t>(ctx) * V + static_cast<size_t>(tok);
      if (dense) {
        uint64_t& w = seen[pair >> 6];
        const uint64_t bit = uint64_t{1} << (pair & 63);
        repeat = (w & bit) != 0;
        w |= bit;
      } else {
        repeat = !seen_sparse.insert(pair).second;
      }
    }
    if (repeat)
      ++r.repeats_skipped;
    else
      cand.push_back({t, tok, rec.expert, rec.confidence, green});
    if (opt_.tokens_detail)
      detail.push_back({t, tok, rec.expert, rec.confidence, green, !repeat, ""});
  }
  r.candidates = static_cast<int64_t>(cand.size());

  // Select the scored tokens (and their CSPV strata).
  std::vector<const Candidate*> scored;
  std::vector<int32_t> stratum;
  if (opt_.method == DetectMethod::Cspv) {
    std::vector<float> conf(cand.size());
    for (size_t i = 0; i < cand.size(); ++i) conf[i] = cand[i].confidence;
    r.strata = {{"low", 0, 0}, {"high", 0, 0}, {"random", 0, 0}};
    for (const CspvPick& p : cspv_sample(conf, opt_.sample, cspv_seed(in.tokens))) {
      scored.push_back(&cand[p.index]);
      stratum.push_back(p.stratum);
      StratumCount& s = r.strata[static_cast<size_t>(p.stratum)];
      ++s.n;
      s.hits += cand[p.index].green;
    }
  } else {
    for (const Candidate& c : cand) scored.push_back(&c);
  }

  for (const Candidate* c : scored) r.g += c->green;
  r.n = static_cast<int64_t>(scored.size());
  r.plain_z = z_score(r.g, r.n, r.gamma);
  if (opt_.method == DetectMethod::Weighted) {
    double num = 0.0, den = 0.0;
    for (const Candidate* c : scored) {
      const double w = c->confidence;
      num += w * ((c->green ? 1.0 : 0.0) - r.gamma);
      den += w * w;
    }
    r.z = den > 0.0 ? num / std::sqrt(r.gamma * (1.0 - r.gamma) * den) : 0.0;
    const double lp = normal_log_sf(r.z);
    r.p_value = std::exp(lp);
    r.log10_p = lp / std::log(10.0);
  } else {
    r.z = r.plain_z;
    const double lp = binomial_log_sf(r.g, r.n, r.gamma);
    r.p_value = std::exp(lp);
    r.log10_p = lp / std::log(10.0);
  }
  decide(r);

  if (opt_.tokens_detail) {
    // Only CSPV leaves candidates unscored; mark the sampled ones with their stratum.
    if (opt_.method == DetectMethod::Cspv) {
      static constexpr const char* kNames[] = {"low", "high", "random"};
      for (TokenDetail& d : detail) d.scored = false;
      for (size_t i = 0; i < scored.size(); ++i) {
        TokenDetail& d = detail[static_cast<size_t>(scored[i]->position - start)];
        d.scored = true;
        d.stratum = kNames[stratum[i]];
      }
    }
    r.tokens = std::move(detail);
  }
  return r;
}

}  // namespace epwa
