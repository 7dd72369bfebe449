// epwa train-oracle: fit a PEPI oracle (docs/PEPI.md) on teacher-forced passes of the model over
// a corpus and/or over text the model samples itself; held-out numbers go into the oracle file.
#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "command.hpp"
#include "common.hpp"
#include "epwa/error.hpp"
#include "epwa/files.hpp"
#include "epwa/generate.hpp"
#include "epwa/pepi.hpp"
#include "epwa/platform.hpp"
#include "epwa/tokenizer.hpp"
#include "epwa/watermark.hpp"

namespace epwa::cli {
namespace {

struct Args {
  ModelArgs model;
  std::string corpus, out, features = "topk:20", metrics_json, save_raw;
  std::vector<std::string> raw;
  int64_t line_offset = 0;
  int32_t layer = -1, seq_len = 256, generate = 0, gen_len = 128, epochs = 6, hidden = 0;
  double hidden_lr = 0.05;
  int64_t max_positions = 60000;
  double heldout = 0.1, lr = 0.2, l2 = 1e-7;
  uint64_t seed = 1;
};

uint64_t xorshift(uint64_t& s) {
  s ^= s << 13;
  s ^= s >> 7;
  s ^= s << 17;
  return s;
}

void log_line(const std::string& s) {
  std::cerr << "train-oracle: " << s << std::endl;
}

const Command kTrainOracle{
    "train-oracle",
    "Train a PEPI oracle: predict the router's expert from next-token distributions",
    [](CLI::App& app) {
      auto a = std::make_shared<Args>();
      a->model.add(app);
      app.add_option("--corpus", a->corpus,
                     "text file, one paragraph a line (never the evaluation's held-out text)");
      app.add_option("--generate", a->generate,
                     "also sample this many continuations of corpus-line prompts")
          ->check(real_number({.lo = 0}));
      app.add_option("--gen-len", a->gen_len, "tokens per sampled continuation")
          ->check(real_number({.lo = 0, .lo_open = true}));
      app.add_option("--router-layer", a->layer, "MoE layer (negative: from the last, -1 = last)");
      app.add_option("--features", a->features,
                     "topk:K, full, optionally ',ctx' (context token ids)");
      app.add_option("--out", a->out, "oracle file to write");
      app.add_option("--save-raw", a->save_raw,
                     "also keep the collected positions here (top-k features only)");
      app.add_option("--raw", a->raw,
                     "train on positions kept by --save-raw (repeatable) instead of the model");
      app.add_option("--line-offset", a->line_offset,
                     "skip this many (shuffled) corpus lines first")
          ->check(real_number({.lo = 0}));
      app.add_option("--max-positions", a->max_positions, "positions to collect (train + held-out)")
          ->check(real_number({.lo = 0, .lo_open = true}));
      app.add_option("--seq-len", a->seq_len, "tokens per corpus sequence")
          ->check(real_number({.lo = 2, .hi = 4096}));
      app.add_option("--heldout", a->heldout, "fraction of sequences held out")
          ->check(real_number({.lo = 0.0, .hi = 0.9}));
      app.add_option("--epochs", a->epochs)->check(real_number({.lo = 0, .lo_open = true}));
      app.add_option("--lr", a->lr, "AdaGrad step")->check(real_number({.lo = 0, .lo_open = true}));
      app.add_option("--l2", a->l2)->check(real_number({.lo = 0}));
      app.add_option("--hidden", a->hidden,
                     "width of the hidden ReLU layer (0 = logistic regression)")
          ->check(real_number({.lo = 0, .hi = 4096}));
      app.add_option("--hidden-lr", a->hidden_lr, "AdaGrad step of the hidden layer")
          ->check(real_number({.lo = 0, .lo_open = true}));
      app.add_option("--seed", a->seed);
      app.add_option("--metrics-json", a->metrics_json, "also write the held-out metrics here");
      return [a] {
        const auto t0 = std::chrono::steady_clock::now();
        auto elapsed = [&] {
          return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        };
        check(!a->corpus.empty() || a->generate > 0 || !a->raw.empty(),
              "train-oracle: give --corpus and/or --generate, or --raw");
        check(!a->out.empty() || !a->save_raw.empty(),
              "train-oracle: give --out (and/or --save-raw)");
        const PepiFeatureSpec spec = parse_pepi_features(a->features);
        uint64_t rng = a->seed * 0x9e3779b97f4a7c15ull + 7;
        OracleInfo info;
        info.features = spec;
        PepiRawData raw;
        std::vector<std::vector<int32_t>> seqs;
        std::unique_ptr<Model> model;
        if (!a->raw.empty()) {
          for (const auto& f : a->raw) raw.append(PepiRawData::load(path_from_utf8(f)));
          log_line(fmt::format("{} positions in {} sequences from {} raw file(s)", raw.positions(),
                               raw.sequences(), a->raw.size()));
          info.router_hash = raw.router_hash;
          info.router_layer = raw.router_layer;
          info.num_experts = raw.num_experts;
          info.vocab_size = raw.vocab_size;
          info.model_source = "raw: " + a->raw.front();
          info.corpus = "raw positions";
          if (spec.embed) {  // the token table comes from the model's weights
            model = a->model.load();
            check(model_router_hash(*model) == raw.router_hash,
                  "train-oracle: the raw data was collected from another model (router hash "
                  "differs)");
          }
        } else {
          const auto path = resolve_model_path(a->model.model);
          model = a->model.load();
          auto tok = load_tokenizer(path);
          const ModelConfig& c = model->config();

          std::vector<std::string> lines;
          if (!a->corpus.empty()) {
            std::ifstream in = open_input_file(path_from_utf8(a->corpus), "train-oracle: corpus");
            for (std::string l; std::getline(in, l);)
              if (l.size() >= 40) lines.push_back(std::move(l));
            check(!lines.empty(),
                  "train-oracle: corpus " + a->corpus + " has no usable line (>= 40 bytes)");
            for (size_t i = lines.size(); i > 1; --i)
              std::swap(lines[i - 1], lines[xorshift(rng) % i]);
          }
          // Sequences: sampled continuations first (they resemble what detection sees), then
          // corpus.
          int64_t budget = a->max_positions;
          size_t next_line = std::min(lines.size(), static_cast<size_t>(a->line_offset));
          if (a->generate > 0) {
            check(!lines.empty(), "train-oracle: --generate takes its prompts from --corpus lines");
            for (int32_t g = 0; g < a->generate && budget > 0; ++g) {
              auto ids = tok->encode(lines[next_line++ % lines.size()], true, false);
              ids.resize(std::min<size_t>(ids.size(), 4 + xorshift(rng) % 12));
              GenerateOptions o;
              o.max_new_tokens = a->gen_len;
              o.sampling.temperature = 1.0f;
              o.sampling.seed = a->seed * 1000003 + g;
              o.stop_tokens = {c.eos_token_id};
              const auto out = generate(*model, ids, o);
              ids.insert(ids.end(), out.begin(), out.end());
              budget -= static_cast<int64_t>(ids.size());
              seqs.push_back(std::move(ids));
              if ((g + 1) % 10 == 0)
                log_line(fmt::format("generated {}/{} continuations ({:.0f} s)", g + 1, a->generate,
                                     elapsed()));
            }
          }
          for (; budget > 0 && next_line < lines.size(); ++next_line) {
            auto ids = tok->encode(lines[next_line], true, false);
            if (ids.size() < 8) continue;
            ids.resize(std::min<size_t>(ids.size(), static_cast<size_t>(a->seq_len)));
            budget -= static_cast<int64_t>(ids.size());
            seqs.push_back(std::move(ids));
          }
          check(!seqs.empty(), "train-oracle: no training sequence");
          info.router_hash = model_router_hash(*model);
          info.router_layer = resolve_router_layer(a->layer, c.num_moe_layers());
          info.num_experts = c.num_experts;
          info.vocab_size = c.vocab_size;
          info.model_source = path_to_utf8(path);
          info.corpus =
              (a->corpus.empty() ? std::string("") : a->corpus) +
              (a->generate > 0 ? fmt::format(" + {} sampled continuations", a->generate) : "");
        }  // model-side collection

        CollectOptions co;
        co.router_layer = info.router_layer;
        co.features = spec;
        co.progress = [&](const std::string& s) {
          log_line(fmt::format("{} ({:.0f} s)", s, elapsed()));
        };
        if (!spec.full && a->raw.empty()) {
          raw = collect_pepi_raw(*model, seqs, co);
          seqs.clear();
          if (!a->save_raw.empty()) {
            raw.save(path_from_utf8(a->save_raw));
            log_line(fmt::format("kept {} positions in {}", raw.positions(), a->save_raw));
          }
        }
        if (a->out.empty()) return 0;
        // Held-out split by sequence (positions of one text are correlated).
        const size_t nseq = spec.full ? seqs.size() : raw.sequences();
        check(nseq > 0, "train-oracle: no training sequence");
        std::vector<size_t> order(nseq);
        for (size_t i = 0; i < order.size(); ++i) order[i] = i;
        for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[xorshift(rng) % i]);
        const size_t n_held = static_cast<size_t>(a->heldout * static_cast<double>(nseq));
        std::vector<size_t> train_ids(order.begin() + static_cast<std::ptrdiff_t>(n_held),
                                      order.end()),
            held_ids(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(n_held));
        log_line(fmt::format("{} training + {} held-out sequences, features {}", train_ids.size(),
                             held_ids.size(), pepi_features_name(spec)));
        PepiDataset train, held;
        if (spec.embed) info.token_table = pepi_token_table(*model, info.router_layer);
        const PepiFeaturizer feat(spec, info.vocab_size, info.token_table);
        if (spec.full) {
          check(model != nullptr, "train-oracle: full features need the model (raw data is top-k)");
          std::vector<std::vector<int32_t>> train_seqs, held_seqs;
          for (size_t i : train_ids) train_seqs.push_back(std::move(seqs[i]));
          for (size_t i : held_ids) held_seqs.push_back(std::move(seqs[i]));
          train = collect_pepi_data(*model, train_seqs, co);
          held = collect_pepi_data(*model, held_seqs, co);
        } else {
          train = featurize_raw(raw, feat, train_ids);
          held = featurize_raw(raw, feat, held_ids);
        }
        OracleTrainOptions to;
        to.epochs = a->epochs;
        to.learning_rate = a->lr;
        to.l2 = a->l2;
        to.hidden = a->hidden;
        to.hidden_learning_rate = a->hidden_lr;
        to.seed = a->seed;
        to.progress = [&](const std::string& s) {
          log_line(fmt::format("{} ({:.0f} s)", s, elapsed()));
        };
        const Oracle oracle = Oracle::train(info, train, held, to);
        oracle.save(path_from_utf8(a->out));
        nlohmann::json j = to_json(oracle.metrics());
        j["features"] = pepi_features_name(spec);
        j["router_layer"] = info.router_layer;
        j["router_hash"] = info.router_hash;
        j["seconds"] = elapsed();
        j["classifier"] = oracle.classifier();
        j["hidden"] = oracle.hidden();
        if (!a->metrics_json.empty())
          std::ofstream(path_from_utf8(a->metrics_json)) << j.dump(2) << "\n";
        const auto& m = oracle.metrics();
        std::cout << fmt::format(
            "oracle {}: layer {}, {}, {} (hidden {}), {} train / {} held-out positions\n", a->out,
            info.router_layer, pepi_features_name(spec), oracle.classifier(), oracle.hidden(),
            m.train_size, m.heldout_size);
        std::cout << fmt::format("held-out accuracy {:.4f} (majority {:.4f}), log loss {:.4f}\n",
                                 m.accuracy, m.majority_accuracy, m.log_loss);
        for (const auto& b : m.by_confidence)
          std::cout << fmt::format(
              "  router confidence [{:.1f}, {:.1f}): n {:6d}  accuracy {:.4f}\n", b.lo,
              std::min(b.hi, 1.0f), b.n, b.accuracy);
        std::cout << "confusion (rows: router expert, columns: predicted):\n";
        for (const auto& row : m.confusion) {
          for (int64_t v : row) std::cout << fmt::format("{:7d}", v);
          std::cout << "\n";
        }
        return 0;
      };
    }};

}  // namespace
}  // namespace epwa::cli
