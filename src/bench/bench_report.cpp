// The output of `epwa bench`: a llama-bench-like markdown table and the same numbers as JSON.
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "epwa/bench.hpp"

namespace epwa {

namespace {

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string gib(uint64_t b) {
  return fmt("%.2f GiB", static_cast<double>(b) / (1u << 30));
}
std::string mb(uint64_t b) {
  return fmt("%.1f", static_cast<double>(b) * 1e-6);
}

}  // namespace

std::string llama_file_type_name(uint32_t t) {
  switch (t) {
    case 0:
      return "all F32";
    case 1:
      return "F16";
    case 2:
      return "Q4_0";
    case 3:
      return "Q4_1";
    case 7:
      return "Q8_0";
    case 8:
      return "Q5_0";
    case 9:
      return "Q5_1";
    case 10:
      return "Q2_K - Medium";
    case 11:
      return "Q3_K - Small";
    case 12:
      return "Q3_K - Medium";
    case 13:
      return "Q3_K - Large";
    case 14:
      return "Q4_K - Small";
    case 15:
      return "Q4_K - Medium";
    case 16:
      return "Q5_K - Small";
    case 17:
      return "Q5_K - Medium";
    case 18:
      return "Q6_K";
    case 32:
      return "BF16";
    case 38:
      return "MXFP4 - 4.25 bpw";
    default:
      return "unknown";
  }
}

std::string render_bench_markdown(const BenchReport& r) {
  const ActiveBytes& a = r.active;
  std::string s;
  s += "model: " + r.model_file + "\n";
  s += "type: " + r.model_type + ", file " + gib(r.file_bytes) + ", weights " +
       gib(r.weight_bytes) + ", params " + fmt("%.2f B", static_cast<double>(r.params) * 1e-9) +
       "\n";
  s += "threads: " + std::to_string(r.threads) + ", CPU: " + r.cpu + " (kernels " + r.kernels +
       "), commit: " + (r.commit.empty() ? "unknown" : r.commit) + "\n";
  s += "memory bandwidth probe: " + fmt("%.1f", r.probe.gb_per_s) + " GB/s (best of " +
       std::to_string(r.probe.passes) + " passes, mean " + fmt("%.1f", r.probe.mean_gb_per_s) +
       "), " + std::to_string(r.probe.threads) + " threads, " + r.probe.method + " read of " +
       gib(r.probe.bytes) + "\n";
  s += "active bytes per generated token: " + mb(a.total()) + " MB (attention " + mb(a.attention) +
       ", router " + mb(a.router) + ", experts " + mb(a.experts) + ", shared/dense FFN " + mb(a.ffn) + ", head " + mb(a.head) +
       ", embedding row " + fmt("%.4f", static_cast<double>(a.embedding_row) * 1e-6) + ")\n";
  s += "watermark: " + r.watermark + ", router layer " + std::to_string(r.router_layer) + "\n\n";
  s += "| model | size | params | threads | test | t/s | active MB/token | eff. GB/s | x probe |\n";
  s += "|---|---:|---:|---:|---|---:|---:|---:|---:|\n";
  for (const BenchRow& row : r.rows) {
    const bool tg = row.kind == "tg";
    std::string test = row.test;
    if (tg && row.watermark != "none")
      test += " +" + row.watermark + fmt(" (%.3fx plain)", row.vs_plain);
    s += "| " + r.model_type + " | " + gib(r.weight_bytes) + " | " +
         fmt("%.2f B", static_cast<double>(r.params) * 1e-9) + " | " + std::to_string(r.threads) +
         " | " + test + " | " + fmt("%.2f", row.tokens_per_s) + " ± " + fmt("%.2f", row.stddev) +
         " | " + (tg ? mb(a.total()) : "") + " | " +
         (tg ? fmt("%.1f", row.effective_gb_per_s) : "") + " | " +
         (tg ? fmt("%.2f", row.bandwidth_ratio) : "") + " |\n";
  }
  return s;
}

nlohmann::json bench_to_json(const BenchReport& r) {
  const ActiveBytes& a = r.active;
  nlohmann::json rows = nlohmann::json::array();
  for (const BenchRow& row : r.rows)
    rows.push_back({{"test", row.test},
                    {"kind", row.kind},
                    {"tokens", row.tokens},
                    {"seconds", row.seconds},
                    {"tokens_per_s", row.tokens_per_s},
                    {"stddev", row.stddev},
                    {"watermark", row.watermark},
                    {"effective_gb_per_s", row.effective_gb_per_s},
                    {"bandwidth_ratio", row.bandwidth_ratio},
                    {"vs_plain", row.vs_plain}});
  return {{"model_file", r.model_file},
          {"model_type", r.model_type},
          {"file_bytes", r.file_bytes},
          {"weight_bytes", r.weight_bytes},
          {"params", r.params},
          {"threads", r.threads},
          {"cpu", r.cpu},
          {"kernels", r.kernels},
          {"commit", r.commit.empty() ? "unknown" : r.commit},
          {"watermark", r.watermark},
          {"router_layer", r.router_layer},
          {"active_bytes",
           {{"attention", a.attention},
            {"router", a.router},
            {"experts", a.experts},
            {"ffn", a.ffn},
            {"head", a.head},
            {"embedding_row", a.embedding_row},
            {"total", a.total()}}},
          {"memory_bandwidth",
           {{"gb_per_s", r.probe.gb_per_s},
            {"mean_gb_per_s", r.probe.mean_gb_per_s},
            {"bytes", r.probe.bytes},
            {"threads", r.probe.threads},
            {"passes", r.probe.passes},
            {"method", r.probe.method}}},
          {"tests", rows}};
}

}  // namespace epwa
