#!/usr/bin/env python3
"""Draws the model card's figures as plain SVG (stdlib only) from the GPU run's statistics.

    make_figures.py [tools/train/logs/results.json] [docs/figures]
Writes model-expert-usage.svg, model-router-confidence.svg and model-training.svg.
"""
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COLORS = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7"]


def svg(w, h, body):
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
            f'font-family="sans-serif" font-size="11">\n<rect width="{w}" height="{h}" fill="white"/>\n'
            + "\n".join(body) + "\n</svg>\n")


def text(x, y, s, anchor="middle", size=11, weight="normal"):
    s = s.replace("&", "&amp;").replace("<", "&lt;")
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" font-weight="{weight}">{s}</text>'


def panel_grid(n, cols, pw, ph, top=40):
    return [(20 + (i % cols) * pw, top + (i // cols) * ph) for i in range(n)]


def usage_figure(st):
    usage = st["expert_usage"]
    L, E = len(usage), len(usage[0])
    pw, ph, cols = 250, 190, 3
    body = [text(20 + cols * pw / 2, 22, "Expert usage per layer on the held-out split (share of top-2 slots; "
                 "dashed = uniform 1/8)", size=13, weight="bold")]
    for li, (x0, y0) in enumerate(panel_grid(L, cols, pw, ph)):
        tot = sum(usage[li])
        shares = [u / tot for u in usage[li]]
        top = 0.25
        cx, cy, cw, ch = x0 + 35, y0 + 20, pw - 55, ph - 60
        body.append(text(x0 + pw / 2, y0 + 10, f"layer {li}", weight="bold"))
        body.append(f'<line x1="{cx}" y1="{cy + ch}" x2="{cx + cw}" y2="{cy + ch}" stroke="black"/>')
        body.append(f'<line x1="{cx}" y1="{cy}" x2="{cx}" y2="{cy + ch}" stroke="black"/>')
        for t in (0, 0.1, 0.2):
            y = cy + ch - t / top * ch
            body.append(text(cx - 4, y + 4, f"{t:.1f}", anchor="end", size=9))
        bw = cw / E
        for e, s in enumerate(shares):
            h = s / top * ch
            body.append(f'<rect x="{cx + e * bw + 2:.1f}" y="{cy + ch - h:.1f}" width="{bw - 4:.1f}" '
                        f'height="{h:.1f}" fill="{COLORS[e]}"/>')
            body.append(text(cx + e * bw + bw / 2, cy + ch + 12, str(e), size=9))
        yu = cy + ch - (1 / E) / top * ch
        body.append(f'<line x1="{cx}" y1="{yu:.1f}" x2="{cx + cw}" y2="{yu:.1f}" stroke="black" '
                    f'stroke-dasharray="4,3"/>')
        body.append(text(cx + cw / 2, cy + ch + 26, f"expert (max/mean {max(shares) * E:.2f}, "
                         f"min/mean {min(shares) * E:.2f})", size=9))
    return svg(20 + cols * pw + 20, 40 + math.ceil(L / cols) * ph + 10, body)


def confidence_figure(st):
    hp, hw, bins = st["top1_prob_hist"], st["top1_weight_hist"], st["hist_bins"]
    L = len(hp)
    pw, ph, cols = 250, 190, 3
    body = [text(20 + cols * pw / 2, 20, "Router confidence per layer on the held-out split", size=13,
                 weight="bold"),
            text(20 + cols * pw / 2, 38, "blue: top-1 probability (softmax over the 8 experts); orange: top-1 "
                 "weight after top-2 renormalisation", size=11)]
    for li, (x0, y0) in enumerate(panel_grid(L, cols, pw, ph, top=55)):
        cx, cy, cw, ch = x0 + 35, y0 + 20, pw - 55, ph - 60
        tp, tw = sum(hp[li]), sum(hw[li])
        fp, fw = [v / tp for v in hp[li]], [v / tw for v in hw[li]]
        top = max(max(fp), max(fw)) * 1.1
        body.append(text(x0 + pw / 2, y0 + 10, f"layer {li}: mean top-1 prob {st['mean_top1_prob'][li]:.2f}, "
                         f"weight {st['mean_top1_weight'][li]:.2f}", size=10, weight="bold"))
        body.append(f'<line x1="{cx}" y1="{cy + ch}" x2="{cx + cw}" y2="{cy + ch}" stroke="black"/>')
        body.append(f'<line x1="{cx}" y1="{cy}" x2="{cx}" y2="{cy + ch}" stroke="black"/>')
        bw = cw / bins
        for series, color, opacity in ((fp, COLORS[0], 0.75), (fw, COLORS[1], 0.55)):
            for b, f in enumerate(series):
                h = f / top * ch
                body.append(f'<rect x="{cx + b * bw:.1f}" y="{cy + ch - h:.1f}" width="{bw:.1f}" height="{h:.1f}" '
                            f'fill="{color}" fill-opacity="{opacity}"/>')
        for t in (0, 0.5, 1.0):
            body.append(text(cx + t * cw, cy + ch + 12, f"{t:.1f}", size=9))
        body.append(text(cx - 4, cy + 8, f"{top:.2f}", anchor="end", size=9))
        body.append(text(cx + cw / 2, cy + ch + 26, "probability (share of tokens per bin)", size=9))
    return svg(20 + cols * pw + 20, 55 + math.ceil(L / cols) * ph + 10, body)


def training_figure(hist):
    w, h = 560, 300
    cx, cy, cw, ch = 60, 40, 460, 200
    xs = [p["tokens"] / 1e6 for p in hist]
    ys = [p["val_ppl"] for p in hist]
    xmax, ymax = max(xs), max(ys) * 1.05
    body = [text(w / 2, 22, "Validation perplexity during training (first 128 held-out windows, bf16)",
                 size=12, weight="bold"),
            f'<line x1="{cx}" y1="{cy + ch}" x2="{cx + cw}" y2="{cy + ch}" stroke="black"/>',
            f'<line x1="{cx}" y1="{cy}" x2="{cx}" y2="{cy + ch}" stroke="black"/>']
    pts = " ".join(f"{cx + x / xmax * cw:.1f},{cy + ch - y / ymax * ch:.1f}" for x, y in zip(xs, ys))
    body.append(f'<polyline points="{pts}" fill="none" stroke="{COLORS[0]}" stroke-width="2"/>')
    for x, y in zip(xs, ys):
        body.append(f'<circle cx="{cx + x / xmax * cw:.1f}" cy="{cy + ch - y / ymax * ch:.1f}" r="2.5" '
                    f'fill="{COLORS[0]}"/>')
    for t in range(0, int(xmax) + 1, 10):
        body.append(text(cx + t / xmax * cw, cy + ch + 14, str(t), size=9))
    step = 20 if ymax > 60 else 10
    for t in range(0, int(ymax) + 1, step):
        body.append(text(cx - 5, cy + ch - t / ymax * ch + 4, str(t), anchor="end", size=9))
    body.append(text(cx + cw / 2, cy + ch + 32, "training tokens (millions)", size=10))
    body.append(text(cx + cw - 5, cy + ch - ys[-1] / ymax * ch - 8, f"final {ys[-1]:.1f}", anchor="end",
                     size=10))
    return svg(w, h, body)


def main():
    res = json.loads(Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "tools/train/logs/results.json").read_text())
    out = Path(sys.argv[2] if len(sys.argv) > 2 else ROOT / "docs/figures")
    out.mkdir(parents=True, exist_ok=True)
    (out / "model-expert-usage.svg").write_text(usage_figure(res["heldout"]))
    (out / "model-router-confidence.svg").write_text(confidence_figure(res["heldout"]))
    (out / "model-training.svg").write_text(training_figure(res["training"]["history"]))
    print(f"wrote 3 figures to {out}")


if __name__ == "__main__":
    main()
