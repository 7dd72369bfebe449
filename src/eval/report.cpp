// report.html: one self-contained page (inline CSS and SVG, no script, no network) drawn from the
// results JSON: tables, ROC curves, z histograms, TPR under attack, perplexity against delta and a
// token view of one watermarked text.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "epwa/eval.hpp"
#include "epwa/text.hpp"

namespace epwa::eval {

using json = nlohmann::json;

namespace {

std::string esc(const std::string& s) {
  return html_escape(s);
}

std::string num(double v, int prec = 3) {
  if (!std::isfinite(v)) return v > 0 ? "inf" : v < 0 ? "-inf" : "nan";
  char b[64];
  std::snprintf(b, sizeof b, "%.*f", prec, v);
  return b;
}

double getd(const json& j, const char* k, double def = NAN) {
  return j.contains(k) && j[k].is_number() ? j[k].get<double>() : def;
}

std::string with_ci(const json& j, const char* k, int prec = 3) {
  std::string s = num(getd(j, k), prec);
  const std::string ck = std::string(k) + "_ci";
  if (j.contains(ck) && j[ck].is_array() && j[ck].size() == 2 && j[ck][0].is_number())
    s += " <small>[" + num(j[ck][0].get<double>(), prec) + ", " +
         num(j[ck][1].get<double>(), prec) + "]</small>";
  return s;
}

const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd",
                         "#ff7f0e", "#8c564b", "#e377c2", "#17becf"};

struct Series {
  std::string name;
  std::vector<std::pair<double, double>> pts;
  bool dashed = false;
  bool markers = true;
};

// A line chart with linear axes, ticks, axis labels and a legend.
std::string line_chart(const std::string& id, const std::string& kind, const std::string& title,
                       const std::string& xlabel, const std::string& ylabel,
                       const std::vector<Series>& series, double x0, double x1, double y0,
                       double y1) {
  const double W = 460, H = 320, L = 56, R = 150, T = 30, B = 46;
  const double pw = W - L - R, ph = H - T - B;
  if (x1 <= x0) x1 = x0 + 1;
  if (y1 <= y0) y1 = y0 + 1;
  auto X = [&](double x) { return L + (x - x0) / (x1 - x0) * pw; };
  auto Y = [&](double y) { return T + ph - (y - y0) / (y1 - y0) * ph; };
  std::string s = "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" id=\"" + id +
                  "\" data-chart=\"" + kind + "\" width=\"" + num(W, 0) + "\" height=\"" +
                  num(H, 0) + "\" viewBox=\"0 0 " + num(W, 0) + " " + num(H, 0) +
                  "\" role=\"img\"><title>" + esc(title) + "</title>";
  s += "<text x=\"" + num(L, 0) + "\" y=\"18\" class=\"t\">" + esc(title) + "</text>";
  s += "<rect x=\"" + num(L, 1) + "\" y=\"" + num(T, 1) + "\" width=\"" + num(pw, 1) +
       "\" height=\"" + num(ph, 1) + "\" fill=\"none\" stroke=\"#999\"/>";
  for (int i = 0; i <= 5; ++i) {
    const double xv = x0 + (x1 - x0) * i / 5, yv = y0 + (y1 - y0) * i / 5;
    s += "<line x1=\"" + num(X(xv), 1) + "\" y1=\"" + num(T + ph, 1) + "\" x2=\"" + num(X(xv), 1) +
         "\" y2=\"" + num(T + ph + 4, 1) + "\" stroke=\"#666\"/>";
    s += "<text x=\"" + num(X(xv), 1) + "\" y=\"" + num(T + ph + 16, 1) +
         "\" class=\"tk\" text-anchor=\"middle\">" + num(xv, 2) + "</text>";
    s += "<line x1=\"" + num(L, 1) + "\" y1=\"" + num(Y(yv), 1) + "\" x2=\"" + num(L + pw, 1) +
         "\" y2=\"" + num(Y(yv), 1) + "\" stroke=\"#eee\"/>";
    s += "<text x=\"" + num(L - 6, 1) + "\" y=\"" + num(Y(yv) + 4, 1) +
         "\" class=\"tk\" text-anchor=\"end\">" + num(yv, 2) + "</text>";
  }
  s += "<text x=\"" + num(L + pw / 2, 1) + "\" y=\"" + num(H - 8, 1) +
       "\" class=\"ax\" text-anchor=\"middle\">" + esc(xlabel) + "</text>";
  s += "<text x=\"14\" y=\"" + num(T + ph / 2, 1) +
       "\" class=\"ax\" text-anchor=\"middle\" transform=\"rotate(-90 14 " + num(T + ph / 2, 1) +
       ")\">" + esc(ylabel) + "</text>";
  for (size_t k = 0; k < series.size(); ++k) {
    const Series& se = series[k];
    const char* col = kColors[k % 8];
    std::string pts;
    for (auto [x, y] : se.pts)
      pts += num(X(std::clamp(x, x0, x1)), 1) + "," + num(Y(std::clamp(y, y0, y1)), 1) + " ";
    s += "<polyline class=\"series\" fill=\"none\" stroke=\"" + std::string(col) +
         "\" stroke-width=\"2\"" + (se.dashed ? " stroke-dasharray=\"5,3\"" : "") + " points=\"" +
         pts + "\"/>";
    if (se.markers)
      for (auto [x, y] : se.pts)
        s += "<circle cx=\"" + num(X(std::clamp(x, x0, x1)), 1) + "\" cy=\"" +
             num(Y(std::clamp(y, y0, y1)), 1) + "\" r=\"2.5\" fill=\"" + col + "\"/>";
    const double ly = T + 10 + 16 * static_cast<double>(k);
    s += "<line x1=\"" + num(L + pw + 10, 1) + "\" y1=\"" + num(ly, 1) + "\" x2=\"" +
         num(L + pw + 28, 1) + "\" y2=\"" + num(ly, 1) + "\" stroke=\"" + col +
         "\" stroke-width=\"2\"" + (se.dashed ? " stroke-dasharray=\"5,3\"" : "") + "/>";
    s += "<text x=\"" + num(L + pw + 32, 1) + "\" y=\"" + num(ly + 4, 1) + "\" class=\"tk\">" +
         esc(se.name) + "</text>";
  }
  return s + "</svg>\n";
}

// Overlaid histograms of positive and negative z-scores with the z = 4 line.
std::string z_histogram(const std::string& id, const std::string& title,
                        const std::vector<double>& pos, const std::vector<double>& neg) {
  double lo = -4, hi = 8;
  for (double v : pos) hi = std::max(hi, v), lo = std::min(lo, v);
  for (double v : neg) hi = std::max(hi, v), lo = std::min(lo, v);
  lo = std::floor(lo), hi = std::ceil(hi);
  const int bins = 40;
  const double w = (hi - lo) / bins;
  std::vector<double> hp(bins, 0), hn(bins, 0);
  auto fill = [&](const std::vector<double>& v, std::vector<double>& h) {
    for (double x : v)
      h[std::clamp(static_cast<int>((x - lo) / w), 0, bins - 1)] +=
          1.0 / std::max<size_t>(1, v.size());
  };
  fill(pos, hp);
  fill(neg, hn);
  const double ymax =
      std::max(*std::max_element(hp.begin(), hp.end()), *std::max_element(hn.begin(), hn.end())) *
          1.1 +
      1e-9;
  const double W = 460, H = 320, L = 56, R = 150, T = 30, B = 46, pw = W - L - R, ph = H - T - B;
  auto X = [&](double x) { return L + (x - lo) / (hi - lo) * pw; };
  auto Y = [&](double y) { return T + ph - y / ymax * ph; };
  std::string s = "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" id=\"" + id +
                  "\" data-chart=\"zhist\" width=\"460\" height=\"320\" viewBox=\"0 0 460 320\" "
                  "role=\"img\"><title>" +
                  esc(title) + "</title>";
  s += "<text x=\"" + num(L, 0) + "\" y=\"18\" class=\"t\">" + esc(title) + "</text>";
  s += "<rect x=\"" + num(L, 1) + "\" y=\"" + num(T, 1) + "\" width=\"" + num(pw, 1) +
       "\" height=\"" + num(ph, 1) + "\" fill=\"none\" stroke=\"#999\"/>";
  auto bars = [&](const std::vector<double>& h, const char* col) {
    for (int b = 0; b < bins; ++b)
      if (h[b] > 0)
        s += "<rect class=\"bar\" x=\"" + num(X(lo + b * w), 1) + "\" y=\"" + num(Y(h[b]), 1) +
             "\" width=\"" + num(pw / bins, 1) + "\" height=\"" + num(T + ph - Y(h[b]), 1) +
             "\" fill=\"" + col + "\" fill-opacity=\"0.55\"/>";
  };
  bars(hn, "#1f77b4");
  bars(hp, "#d62728");
  for (int i = 0; i <= 6; ++i) {
    const double xv = lo + (hi - lo) * i / 6;
    s += "<text x=\"" + num(X(xv), 1) + "\" y=\"" + num(T + ph + 16, 1) +
         "\" class=\"tk\" text-anchor=\"middle\">" + num(xv, 1) + "</text>";
    s += "<text x=\"" + num(L - 6, 1) + "\" y=\"" + num(Y(ymax * i / 6) + 4, 1) +
         "\" class=\"tk\" text-anchor=\"end\">" + num(ymax * i / 6, 2) + "</text>";
  }
  s += "<line x1=\"" + num(X(4), 1) + "\" y1=\"" + num(T, 1) + "\" x2=\"" + num(X(4), 1) +
       "\" y2=\"" + num(T + ph, 1) + "\" stroke=\"#000\" stroke-dasharray=\"4,3\"/><text x=\"" +
       num(X(4) + 3, 1) + "\" y=\"" + num(T + 12, 1) + "\" class=\"tk\">z = 4</text>";
  s += "<text x=\"" + num(L + pw / 2, 1) + "\" y=\"" + num(H - 8, 1) +
       "\" class=\"ax\" text-anchor=\"middle\">z-score</text>";
  s += "<text x=\"14\" y=\"" + num(T + ph / 2, 1) +
       "\" class=\"ax\" text-anchor=\"middle\" transform=\"rotate(-90 14 " + num(T + ph / 2, 1) +
       ")\">fraction of texts</text>";
  const char* names[] = {"negatives", "watermarked"};
  const char* cols[] = {"#1f77b4", "#d62728"};
  for (int k = 0; k < 2; ++k)
    s += "<rect x=\"" + num(L + pw + 10, 1) + "\" y=\"" + num(T + 4 + 16 * k, 1) +
         "\" width=\"14\" height=\"10\" fill=\"" + cols[k] +
         "\" fill-opacity=\"0.55\"/><text x=\"" + num(L + pw + 28, 1) + "\" y=\"" +
         num(T + 13 + 16 * k, 1) + "\" class=\"tk\">" + names[k] + " (" +
         std::to_string(k ? pos.size() : neg.size()) + ")</text>";
  return s + "</svg>\n";
}

std::vector<double> dvec(const json& j, const char* k) {
  std::vector<double> v;
  if (j.contains(k) && j[k].is_array())
    for (const auto& x : j[k])
      if (x.is_number()) v.push_back(x.get<double>());
  return v;
}

const json* find_detection(const json& r, const std::string& mode, const std::string& method,
                           bool prompt, bool repeats) {
  if (!r.contains("detection")) return nullptr;
  for (const auto& d : r["detection"])
    if (d.value("mode", "") == mode && d.value("method", "") == method &&
        d.value("prompt", false) == prompt && d.value("repeats", true) == repeats)
      return &d;
  return nullptr;
}

// A frontier row's first two cells: its setting and how it is detected.
std::string setting_cells(const json& row) {
  const double he = getd(row, "entropy_detection", 0);
  return "<tr><td class=l>" + esc(row.value("setting", "")) + "</td><td class=l>" +
         (row.value("mode", "") == "exp" ? std::string("exp")
          : he > 0                       ? "entropy >= " + num(he, 2)
                                         : std::string("all tokens")) +
         "</td>";
}

}  // namespace

// The frontier (docs/EVAL.md "Frontier"): TPR at z = 4 against the perplexity cost, one series per
// family of settings at the length nearest 200 tokens, and the table of every length.
std::string frontier_section(const json& f) {
  const json& rows = f["rows"];
  const std::vector<int32_t> lengths = f["lengths"].get<std::vector<int32_t>>();
  if (rows.empty() || lengths.empty()) return "";
  size_t at = 0;
  for (size_t i = 0; i < lengths.size(); ++i)
    if (std::abs(lengths[i] - 200) < std::abs(lengths[at] - 200)) at = i;
  std::map<std::string, Series> by;
  double c0 = 0, c1 = 0, t0 = 1;
  for (const auto& row : rows) {
    std::string fam = row.value("mode", "");
    if (getd(row, "selective_bias", 0) > 0)
      fam += ", selective";
    else if (getd(row, "entropy_detection", 0) > 0)
      fam += ", entropy det.";
    Series& se = by[fam];
    se.name = fam;
    const double cost = 100 * getd(row, "ppl_cost", 0);
    const double tpr = getd(row["lengths"][at], "tpr_z4", 0);
    se.pts.emplace_back(cost, tpr);
    c0 = std::min(c0, cost), c1 = std::max(c1, cost), t0 = std::min(t0, tpr);
  }
  std::vector<Series> ss;
  for (auto& [name, se] : by) {
    std::sort(se.pts.begin(), se.pts.end());
    ss.push_back(std::move(se));
  }
  std::string h =
      "<h2>Frontier</h2><div class=\"charts\">\n" +
      line_chart("frontier", "frontier",
                 "TPR at z = 4, " + std::to_string(lengths[at]) + " tokens, vs perplexity cost",
                 "perplexity cost (%)", "TPR at z = 4", ss, std::floor(c0 / 5) * 5,
                 std::ceil(c1 / 5) * 5 + 5, std::min(0.8, std::floor(t0 * 10) / 10), 1) +
      "</div>\n<p>Negatives: " + std::to_string(f["negatives"].value("human", 0)) +
      " human passages and " + std::to_string(f["negatives"].value("unwatermarked", 0)) +
      " unwatermarked texts; unwatermarked perplexity " + with_ci(f, "unwatermarked_ppl_mean", 2) +
      ". Each cell: TPR at z = 4 [95% "
      "bootstrap] / false positives at z = 4 / TPR at the empirical FPR 0.1% "
      "threshold.</p>\n<table><tr><th>setting</th><th>detection</th><th>perplexity"
      "</th><th>cost</th>";
  for (int32_t L : lengths) h += "<th>" + std::to_string(L) + " tokens</th>";
  h += "</tr>\n";
  for (const auto& row : rows) {
    h += setting_cells(row) + "<td>" + with_ci(row, "ppl_mean", 2) + "</td><td>" +
         num(100 * getd(row, "ppl_cost", 0), 1) + "%</td>";
    for (const auto& l : row["lengths"])
      h += "<td>" + with_ci(l, "tpr_z4") + " / " + std::to_string(l.value("fp_z4", 0)) + " / " +
           num(getd(l, "tpr_fpr01"), 3) + "</td>";
    h += "</tr>\n";
  }
  h += "</table>\n";
  // Robustness (--frontier-attacks): one column per attack and rate, the rows' own detectors.
  if (!rows[0].contains("attacks")) return h;
  h += "<h3>Robustness</h3><p>TPR at z = 4 [95% bootstrap] of each setting's first " +
       std::to_string(rows[0]["attacks"][0].value("n", 0)) + " texts at " +
       std::to_string(rows[0].value("attack_tokens", 0)) +
       " tokens: unedited, edited at each rate, and generated by a 4-bit load.</p>\n"
       "<table><tr><th>setting</th><th>detection</th>";
  for (const auto& a : rows[0]["attacks"])
    h += "<th>" + esc(a.value("attack", "")) +
         (getd(a, "rate", 0) > 0 ? " " + num(100 * getd(a, "rate", 0), 0) + "%" : "") + "</th>";
  h += "</tr>\n";
  for (const auto& row : rows) {
    h += setting_cells(row);
    for (const auto& a : row["attacks"]) h += "<td>" + with_ci(a, "tpr_z4") + "</td>";
    h += "</tr>\n";
  }
  return h + "</table>\n";
}

std::string render_report(const json& r) {
  std::string h =
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>epwa eval "
      "report</title>\n<style>"
      "body{font-family:sans-serif;margin:24px;max-width:1200px;color:#222}"
      "table{border-collapse:collapse;margin:8px 0 20px}td,th{border:1px solid #ccc;padding:3px "
      "7px;font-size:13px;"
      "text-align:right}th{background:#f3f3f3}td.l{text-align:left}small{color:#777}"
      ".charts{display:flex;flex-wrap:wrap;gap:12px}.chart{border:1px solid #ddd;background:#fff}"
      ".chart .t{font-size:13px;font-weight:bold}.chart .tk{font-size:10px}.chart "
      ".ax{font-size:11px}"
      ".tokens{font-family:monospace;white-space:pre-wrap;line-height:1.7;border:1px solid "
      "#ddd;padding:10px}"
      ".g{background:#b7f0b1}.r{background:#f7b9b9}.u{background:#eee;color:#888}"
      "</style></head><body>\n<h1>EPW-A evaluation</h1>\n";
  const json& m = r.value("model", json::object());
  const json& p = r.value("params", json::object());
  h += "<p>Model <code>" + esc(m.value("path", "")) + "</code>, router hash <code>" +
       esc(m.value("router_hash", "")) + "</code>, watermark layer " +
       std::to_string(m.value("watermark_layer", 0)) + "; commit <code>" +
       esc(r.value("commit", "")) + "</code>. gamma " + num(getd(p, "gamma"), 2) +
       (r.contains("frontier") ? std::string() : ", delta " + num(getd(p, "delta"), 2)) + ", " +
       std::to_string(p.value("n", 0)) + " texts per mode of up to " +
       std::to_string(p.value("tokens", 0)) + " tokens, threshold z = 4.</p>\n";
  if (p.value("keys", 1) > 1 || p.value("context_buckets", 0) > 0)
    h += "<p id=\"defences\">Defences against stealing: a keyring of " +
         std::to_string(p.value("keys", 1)) +
         " keys (a key per text by KR-v1; every text detected over the keyring, its z reported "
         "minus " +
         num(getd(p, "z_correction"), 3) + " so that z &gt; 4 is the corrected decision)" +
         (p.value("context_buckets", 0) > 0
              ? ", CTX-v1 lists with " + std::to_string(p.value("context_buckets", 0)) + " buckets"
              : std::string()) +
         ".</p>\n";
  if (r.contains("seconds")) h += "<p>Run time " + num(getd(r, "seconds"), 0) + " s.</p>\n";

  // A frontier run (eval --frontier) has nothing else.
  if (r.contains("frontier")) return h + frontier_section(r["frontier"]) + "</body></html>\n";
  // Detection table.
  h += "<h2>Detection</h2><p>Negatives: human passages and unwatermarked generations from the same "
       "prompts and "
       "seeds. Brackets: bootstrap 95% "
       "intervals.</p>\n<table><tr><th>mode</th><th>method</th><th>prompt</th>"
       "<th>repeats</th><th>pos</th><th>neg</th><th>TPR@z4</th><th>FPR@z4</th><th>AUC</"
       "th><th>TPR@FPR1%</th>"
       "<th>TPR@FPR0.1%</th><th>z pos mean/median</th><th>z neg mean/median</th></tr>\n";
  if (r.contains("detection"))
    for (const auto& d : r["detection"])
      h += "<tr><td class=l>" + esc(d.value("mode", "")) + "</td><td class=l>" +
           esc(d.value("method", "")) + "</td><td>" +
           (d.value("prompt", false) ? "with" : "without") + "</td><td>" +
           (d.value("repeats", false) ? "counted" : "once") + "</td><td>" +
           std::to_string(d.value("n_pos", 0)) + "</td><td>" + std::to_string(d.value("n_neg", 0)) +
           "</td><td>" + with_ci(d, "tpr_z4") + "</td><td>" + with_ci(d, "fpr_z4") + "</td><td>" +
           with_ci(d, "auc") + "</td><td>" + with_ci(d, "tpr_fpr1") + "</td><td>" +
           with_ci(d, "tpr_fpr01") + "</td><td>" + num(getd(d, "z_pos_mean"), 2) + " / " +
           num(getd(d, "z_pos_median"), 2) + "</td><td>" + num(getd(d, "z_neg_mean"), 2) + " / " +
           num(getd(d, "z_neg_median"), 2) + "</td></tr>\n";
  h += "</table>\n";

  // ROC and histograms.
  h += "<h2>ROC curves and z-scores</h2><div class=\"charts\">\n";
  for (const std::string mode : {"gsg", "ewp", "exp"}) {
    std::vector<Series> ss;
    for (const std::string method : {"full", "cspv", "weighted", "pepi", "exp"})
      for (bool prompt : {true, false})
        if (const json* d = find_detection(r, mode, method, prompt, false);
            d && d->contains("roc")) {
          Series se{method + (prompt ? "" : " no prompt"), {}, !prompt, false};
          for (const auto& pt : (*d)["roc"])
            se.pts.emplace_back(pt[0].get<double>(), pt[1].get<double>());
          ss.push_back(std::move(se));
        }
    if (ss.empty()) continue;  // exp without --exp
    h += line_chart("roc-" + mode, "roc", "ROC, " + mode + " vs human + unwatermarked",
                    "false-positive rate", "true-positive rate", ss, 0, 1, 0, 1);
  }
  for (const std::string mode : {"gsg", "ewp", "exp"})
    if (const json* d = find_detection(r, mode, mode == "exp" ? "exp" : "full", true, false))
      h += z_histogram("zhist-" + mode, "z (full, with prompt): " + mode + " vs negatives",
                       dvec(*d, "z_pos"), dvec(*d, "z_neg"));
  h += "</div>\n";

  // Attacks.
  h += "<h2>Robustness</h2><div class=\"charts\">\n";
  if (r.contains("attacks")) {
    for (const std::string mode : {"gsg", "ewp"}) {
      std::vector<Series> ss;
      double xmax = 0.3;
      const json* base = find_detection(r, mode, "full", true, false);
      for (const std::string source : {"topk", "vocab"})
        for (const std::string kind : {"substitute", "delete", "insert"}) {
          Series se{kind + " (" + (source == "topk" ? "model top-k" : "vocabulary") + ")",
                    {},
                    source == "vocab",
                    true};
          if (base) se.pts.emplace_back(0.0, getd(*base, "tpr_z4", 0));
          for (const auto& a : r["attacks"])
            if (a.value("mode", "") == mode && a.value("source", "") == source &&
                a.value("attack", "") == kind && a.value("method", "") == "full" &&
                a.value("prompt", false)) {
              se.pts.emplace_back(getd(a, "rate", 0), getd(a, "tpr_z4", 0));
              xmax = std::max(xmax, getd(a, "rate", 0));
            }
          std::sort(se.pts.begin(), se.pts.end());
          if (se.pts.size() > 1) ss.push_back(std::move(se));
        }
      h += line_chart("attacks-" + mode, "attacks",
                      "TPR@z4 under attack, " + mode + " (full, with prompt)", "edit rate",
                      "TPR at z = 4", ss, 0, xmax, 0, 1);
    }
  }
  // Perplexity against delta.
  if (r.contains("delta_grid")) {
    std::vector<Series> ss;
    double dmax = 1, pmin = 1e300, pmax = 0;
    for (const std::string mode : {"gsg", "ewp"}) {
      Series se{mode, {}, false, true};
      for (const auto& g : r["delta_grid"]) {
        const double d = getd(g, "delta", 0), pp = getd(g, "ppl_mean");
        if (!std::isfinite(pp)) continue;
        if (g.value("mode", "") == mode || g.value("mode", "") == "none") {
          se.pts.emplace_back(d, pp);
          dmax = std::max(dmax, d), pmin = std::min(pmin, pp), pmax = std::max(pmax, pp);
        }
      }
      std::sort(se.pts.begin(), se.pts.end());
      if (!se.pts.empty()) ss.push_back(std::move(se));
    }
    if (pmax < pmin) pmin = 0, pmax = 1;
    const double pad = std::max(0.5, (pmax - pmin) * 0.15);
    h += line_chart("ppl-delta", "ppl-delta", "Oracle perplexity vs delta (0 = unwatermarked)",
                    "delta", "perplexity", ss, 0, dmax, std::max(0.0, pmin - pad), pmax + pad);
  }
  h += "</div>\n";

  // Attack table.
  if (r.contains("attacks") && !r["attacks"].empty()) {
    h += "<h3>Attack table "
         "(dedup)</h3><table><tr><th>mode</th><th>attack</th><th>source</th><th>rate / window</th>"
         "<th>prompt</th><th>method</th><th>n</th><th>TPR@z4</th><th>mean z</th></tr>\n";
    for (const auto& a : r["attacks"])
      h += "<tr><td class=l>" + esc(a.value("mode", "")) + "</td><td class=l>" +
           esc(a.value("attack", "")) + "</td><td class=l>" + esc(a.value("source", "")) +
           "</td><td>" + num(getd(a, "rate", 0), 2) + "</td><td>" +
           (a.value("prompt", false) ? "with" : "without") + "</td><td class=l>" +
           esc(a.value("method", "")) + "</td><td>" + std::to_string(a.value("n", 0)) +
           "</td><td>" + with_ci(a, "tpr_z4") + "</td><td>" + num(getd(a, "z_mean"), 2) +
           "</td></tr>\n";
    h += "</table>\n";
  }

  // Quality, speed, cross-precision.
  h += "<h2>Quality</h2><table><tr><th>texts</th><th>n</th><th>mean tokens</th><th>oracle "
       "perplexity (mean)</th>"
       "<th>median</th><th>distinct-1</th><th>distinct-2</th><th>distinct-3</th></tr>\n";
  if (r.contains("quality"))
    for (const auto& [name, q] : r["quality"].items())
      h += "<tr><td class=l>" + esc(name) + "</td><td>" + std::to_string(q.value("texts", 0)) +
           "</td><td>" + num(getd(q, "mean_tokens"), 1) + "</td><td>" + with_ci(q, "ppl_mean", 2) +
           "</td><td>" + num(getd(q, "ppl_median"), 2) + "</td><td>" + num(getd(q, "distinct_1")) +
           "</td><td>" + num(getd(q, "distinct_2")) + "</td><td>" + num(getd(q, "distinct_3")) +
           "</td></tr>\n";
  h += "</table>\n<h2>Speed and other checks</h2><pre>" +
       esc(r.value("speed", json::object()).dump(1)) + "</pre>\n";
  const json cp = r.value("cross_precision", json::object());
  if (cp.is_array()) {
    h +=
        "<h3>Cross-precision (GSG, full method, with prompt)</h3><table><tr><th>generated with</th>"
        "<th>detected with</th><th>n</th><th>TPR@z4</th><th>mean z</th><th>router "
        "agreement</th></tr>\n";
    for (const auto& c : cp)
      h += "<tr><td class=l>" + esc(c.value("generated_with", "")) + "</td><td class=l>" +
           esc(c.value("detected_with", "")) + "</td><td>" + std::to_string(c.value("n", 0)) +
           "</td><td>" + with_ci(c, "tpr_z4") + "</td><td>" + num(getd(c, "z_mean"), 2) +
           "</td><td>" + num(getd(c, "router_agreement"), 4) + "</td></tr>\n";
    h += "</table>\n";
  } else {
    h += "<p>Cross-precision: <code>" + esc(cp.dump()) + "</code></p>\n";
  }
  h += "<p>PEPI: <code>" + esc(r.value("pepi", json::object()).dump()) + "</code></p>\n";
  if (r.contains("spread"))
    h += "<h3>Next-token entropy and green mass (unwatermarked texts)</h3><pre>" +
         esc(r["spread"].dump(1)) + "</pre>\n";

  // Token view.
  h += "<h2>Token view</h2>\n";
  if (r.contains("sample") && r["sample"].contains("tokens")) {
    const json& s = r["sample"];
    h += "<p>First GSG text (full method, with prompt): z = " + num(getd(s, "z"), 2) + ", " +
         std::to_string(s.value("g", 0)) + " green of " + std::to_string(s.value("n", 0)) +
         " scored tokens. <span class=g>green</span> <span class=r>red</span> <span class=u>not "
         "scored "
         "(repeat)</span></p>\n<div class=\"tokens\" id=\"tokens\"><b>" +
         esc(s.value("prompt", "")) + "</b>";
    for (const auto& t : s["tokens"]) {
      const char* cls = !t.value("scored", false) ? "u" : t.value("green", false) ? "g" : "r";
      h += "<span class=" + std::string(cls) + " title=\"expert " +
           std::to_string(t.value("expert", 0)) + "\">" + esc(t.value("text", "")) + "</span>";
    }
    h += "</div>\n";
  }
  return h + "</body></html>\n";
}

}  // namespace epwa::eval
