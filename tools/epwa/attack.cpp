// epwa attack steal: watermark stealing, spoofing and scrubbing against EPW-A and a KGW-style
// baseline (docs/THREAT_MODEL.md).
#include "epwa/attack.hpp"

#include <fstream>
#include <iostream>
#include <sstream>

#include "command.hpp"
#include "common.hpp"
#include "epwa/error.hpp"
#include "epwa/files.hpp"
#include "epwa/numbers.hpp"
#include "epwa/pepi.hpp"
#include "epwa/tokenizer.hpp"

namespace epwa::cli {
namespace {

struct Args {
  ModelArgs model;
  attack::StealOptions o;
  std::string prompts, observed = "1000,10000,100000", schemes = "epwa,kgw", json_out, oracle,
                       spoof_model, text_only;
  bool json = false;
  int32_t threads = 0;
};

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string part; std::getline(in, part, ',');) out.push_back(part);
  return out;
}

// The spoof writer's tokens must mean what the public model's do.
void check_same_tokenizer(const Tokenizer& pub, const Tokenizer& writer) {
  check(writer.vocab_size() == pub.vocab_size(), [&] {
    return "--spoof-model: its tokenizer has " + std::to_string(writer.vocab_size()) +
           " tokens, the public model's " + std::to_string(pub.vocab_size());
  });
  for (int32_t id = 0; id < pub.vocab_size(); ++id)
    check(writer.token_bytes(id) == pub.token_bytes(id), [&] {
      return "--spoof-model: its tokenizer differs from the public model's (token " +
             std::to_string(id) + ")";
    });
}

void add_steal(CLI::App& steal, const std::shared_ptr<Args>& a) {
  a->prompts = path_to_utf8(path_from_utf8(EPWA_SOURCE_DIR) / "data" / "heldout" / "prompts.txt");
  a->model.add(steal);
  steal.add_option("--key", a->o.key, "the victim's secret watermark key");
  steal.add_option("--prompts", a->prompts,
                   "prompts, one a line: the first half for observed texts, the second for "
                   "attacked ones");
  steal.add_option("--observed", a->observed,
                   "numbers N of watermarked tokens the attacker sees, e.g. 1000,10000,100000");
  steal.add_option(
      "--schemes", a->schemes,
      "schemes attacked, comma-separated: epwa, kgw, epwa-ctx (EPW-A with context buckets)");
  steal.add_option("--tokens", a->o.tokens, "new tokens per text")->check(whole_number(1, 1024));
  steal.add_option("--texts", a->o.texts, "texts spoofed and scrubbed per N")
      ->check(whole_number(1, 1000000));
  steal
      .add_option("--keys", a->o.keys,
                  "the victim's keyring size m: each text watermarked with one of m keys "
                  "(KR-v1), detection corrected for m")
      ->check(whole_number(1, 1024));
  steal.add_flag("--attacker-knows-keys", a->o.attacker_knows_keys,
                 "the attacker is told which key made each observed text and steals each key's "
                 "lists from its own texts (an upper bound on clustering texts by key)");
  steal.add_flag("--attacker-clusters-keys", a->o.attacker_clusters_keys,
                 "the attacker sorts its observed texts into --keys clusters itself and steals "
                 "each cluster's lists (one --observed N)");
  steal
      .add_option("--context-buckets", a->o.context_buckets,
                  "H of the epwa-ctx scheme: lists keyed by the expert and one of H keyed buckets "
                  "of the previous token (CTX-v1)")
      ->check(whole_number(2, 65536));
  steal.add_option("--gamma", a->o.gamma, "green-list fraction")
      ->check(real_number({.lo = 0, .hi = 1, .lo_open = true, .hi_open = true}));
  steal.add_option("--delta", a->o.delta, "the victim's watermark bias")
      ->check(real_number({.lo = 0, .hi = kMaxDelta}));
  steal
      .add_option("--attack-delta", a->o.attack_delta,
                  "the spoofer's bias toward tokens learned green")
      ->check(real_number({.lo = 0, .hi = kMaxDelta}));
  steal
      .add_option("--scrub-budget", a->o.scrub_budget,
                  "most tokens the scrubber substitutes, as a fraction of the text")
      ->check(real_number({.lo = 0, .hi = 1}));
  steal.add_option("--top-k", a->o.top_k, "the scrubber's replacements: the model's top k")
      ->check(whole_number(1, 1000000));
  steal
      .add_option("--temperature", a->o.temperature,
                  "sampling temperature (and the base "
                  "distribution's)")
      ->check(real_number({.lo = 0, .lo_open = true}));
  steal.add_option("--top-p", a->o.top_p, "nucleus mass")
      ->check(real_number({.lo = 0, .hi = 1, .lo_open = true}));
  steal.add_option("--seed", a->o.seed, "first sampling seed")->check(unsigned_number());
  steal
      .add_option("--attacker-oracle", a->oracle,
                  "black-box attacker: every expert it uses is this PEPI oracle's guess from the "
                  "output distribution (epwa train-oracle), not the router's")
      ->check(existing_file());
  steal
      .add_option("--attacker-text-only", a->text_only,
                  "text-only attacker: no model, no router, no distributions; contexts are the "
                  "previous token and the base is the unigram frequencies of this human text file")
      ->check(existing_file());
  steal
      .add_option("--attacker-top-k", a->o.api_top_k,
                  "API attacker: only the top K probabilities of each position (an API's "
                  "logprobs): its base gives the other tokens the rest of the mass evenly, its "
                  "spoofs pick among the top K (0: the whole distribution)")
      ->check(whole_number(0, 1000000));
  steal.add_option("--spoof-model", a->spoof_model,
                   "a second model, with the public model's tokenizer, that writes the spoofs "
                   "(the public model still gives the contexts)");
  add_threads_option(steal, a->threads);
  steal.add_flag("--json", a->json, "print the results as JSON instead of the table");
  steal.add_option("--json-out", a->json_out, "also write the results as JSON to this file");
}

int run_steal(Args& a) {
  a.o.observed.clear();
  for (const std::string& n : split(a.observed)) {
    try {
      a.o.observed.push_back(parse_whole_number(n, 1, 100000000));
    } catch (const Error& e) {
      throw Error(std::string("--observed: ") + e.what());
    }
  }
  check(!a.o.observed.empty(), "--observed: give at least one number of tokens");
  a.o.schemes.clear();
  for (const std::string& s : split(a.schemes)) a.o.schemes.push_back(attack::scheme_from_name(s));
  check(!a.o.schemes.empty(), "--schemes: give epwa, kgw and/or epwa-ctx");
  a.o.prompts = read_input_lines(path_from_utf8(a.prompts), "--prompts file");
  std::ofstream json_file;  // opened first: a bad path fails before the run, not after it
  if (!a.json_out.empty()) {
    check_output_not_input(
        path_from_utf8(a.json_out),
        {path_from_utf8(a.prompts), path_from_utf8(a.oracle), path_from_utf8(a.text_only),
         path_from_utf8(a.spoof_model), a.model.path()},
        "--json-out");
    json_file.open(path_from_utf8(a.json_out), std::ios::binary);
    check(json_file.good(), "--json-out '" + a.json_out + "' cannot be written");
  }
  a.o.progress = [](const std::string& s) { std::cerr << "[attack] " << s << std::endl; };
  if (!a.oracle.empty())
    a.o.oracle = std::make_shared<const Oracle>(Oracle::load(path_from_utf8(a.oracle)));
  start_thread_pool(a.threads);
  auto model = a.model.load();
  if (!a.text_only.empty()) {
    check(a.oracle.empty() && !a.o.attacker_clusters_keys && a.o.api_top_k == 0,
          "--attacker-text-only: not with --attacker-oracle, --attacker-clusters-keys or "
          "--attacker-top-k");
    std::vector<int32_t> tokens;
    for (const std::string& line :
         read_input_lines(path_from_utf8(a.text_only), "--attacker-text-only file")) {
      const auto ids = a.model.tokenizer().encode(line, false, false);
      tokens.insert(tokens.end(), ids.begin(), ids.end());
    }
    check(!tokens.empty(), "--attacker-text-only file '" + a.text_only + "' has no text");
    a.o.text_only_base = attack::unigram_base(tokens, model->config().vocab_size);
  }
  ModelArgs writer_args;
  if (!a.spoof_model.empty()) {
    writer_args.model = a.spoof_model;
    writer_args.quiet = a.model.quiet;
    a.o.writer = writer_args.load();
    check_same_tokenizer(a.model.tokenizer(), writer_args.tokenizer());
  }
  const nlohmann::json r = attack::run_steal(*model, a.model.tokenizer(), a.o);
  if (json_file.is_open()) {
    json_file << r.dump(2) << "\n";
    check(json_file.good(), "writing --json-out '" + a.json_out + "' failed");
  }
  if (a.json) {
    std::cout << r.dump(2) << "\n";
  } else {
    std::cout << attack::steal_table(r);
  }
  return 0;
}

const Command kAttack{
    "attack", "Attacks on the watermark: steal (learn green lists, then spoof and scrub)",
    [](CLI::App& app) {
      auto a = std::make_shared<Args>();
      app.require_subcommand(1);
      CLI::App* steal = app.add_subcommand(
          "steal",
          "Learn green lists from N watermarked tokens with the public model and no key, then "
          "spoof and scrub; EPW-A against a KGW-style baseline (docs/THREAT_MODEL.md)");
      add_steal(*steal, a);
      return [a] { return run_steal(*a); };
    }};

}  // namespace
}  // namespace epwa::cli
