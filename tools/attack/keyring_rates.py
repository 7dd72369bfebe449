#!/usr/bin/env python3
"""TPR and FPR of keyring detection (docs/SPEC.md section 9) at 200 tokens, for keyring sizes m.

Positives: `epwa generate --keyring` with a keyring of KEYS keys (each text watermarked with the
key KR-v1 picks), prompts 1..N of data/heldout/prompts.txt, seeds 1..N, T 0.8, top-p 0.95, as
`epwa eval`. Negatives: the human passages `epwa eval` takes (data/heldout/heldout.txt, not
beginning with a prompt, >= 8 + 50 tokens; the first 8 tokens context). One `epwa detect --jsonl
--keyring` pass scores every text under all KEYS keys; a keyring of m keys is then its own key plus
m - 1 others (positives) or m keys (negatives), detected when its best z exceeds z_m (the
Bonferroni threshold the detector reports). Keys are independent, so this is the decision a
keyring of m keys makes.

usage: PYTHONPATH=build/python /usr/bin/python3 tools/attack/keyring_rates.py build/epwa OUTDIR
environment: KEYS (16: the keyring's size; rows for m = 1, 2, 4, ... up to it), N_POS (200),
N_NEG (600), CONTEXT_BUCKETS (0: GL-v1; H: CTX-v1 lists, docs/SPEC.md 10),
SECRETS (comma-separated: the keyring's secrets instead of KEYS generated ones; e.g. epwa-eval, the
key of `epwa eval`, for one key), METHOD (full: the detection method, `epwa detect --method`),
MIN_NEW_TOKENS (0: `epwa generate --min-new-tokens`; 200 gives texts of exactly 200 tokens)
"""
import json
import math
import os
import subprocess
import sys

import epwa
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KEYS = int(os.environ.get("KEYS", "16"))
SIZES = tuple(1 << i for i in range(KEYS.bit_length()) if 1 << i <= KEYS)


def z_threshold(m, threshold=4.0):
    """m P[Z > z] = P[Z > threshold], by bisection (as keyring_threshold)."""
    sf = lambda z: 0.5 * math.erfc(z / math.sqrt(2))
    target, lo, hi = sf(threshold) / m, threshold, threshold + 40
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if sf(mid) > target else (lo, mid)
    return (lo + hi) / 2


def wilson(k, n, z=1.96):
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


def lines(path):
    with open(path, encoding="utf-8") as f:
        return [l.rstrip("\r\n") for l in f if l.strip()]


def main():
    binary, out = sys.argv[1], sys.argv[2]
    n_pos = int(os.environ.get("N_POS", "200"))
    n_neg = int(os.environ.get("N_NEG", "600"))
    ctx = ["--context-buckets", os.environ["CONTEXT_BUCKETS"]] if os.environ.get("CONTEXT_BUCKETS") else []
    os.makedirs(out, exist_ok=True)
    ring = os.path.join(out, "ring.json")
    secrets = os.environ.get("SECRETS", "").split(",") if os.environ.get("SECRETS") else None
    ids = [f"k{i:02d}" for i in range(len(secrets) if secrets else KEYS)]
    with open(ring, "w") as f:
        json.dump({"default": ids[0], "keys": {k: (secrets[i] if secrets else f"keyring-rates-secret-{k}")
                                               for i, k in enumerate(ids)}}, f)
    os.chmod(ring, 0o600)
    tok = epwa.Model().tokenizer
    prompts = lines(os.path.join(ROOT, "data/heldout/prompts.txt"))

    pos_file = os.path.join(out, "positives.jsonl")
    if not os.path.exists(pos_file):
        with open(pos_file + ".part", "w") as f:
            for i in range(1, n_pos + 1):
                r = subprocess.run([binary, "generate", "-q", "--prompt", prompts[i - 1], "--watermark",
                                    "gsg", "--keyring", ring, "--temperature", "0.8", "--top-p", "0.95",
                                    "-n", "200", "--seed", str(i), "--json",
                                    "--min-new-tokens", os.environ.get("MIN_NEW_TOKENS", "0")] + ctx,
                                   check=True, capture_output=True, text=True)
                j = json.loads(r.stdout)
                f.write(json.dumps({"id": i, "prompt_tokens": j["prompt_tokens"], "tokens": j["tokens"],
                                    "key_id": j["watermark"]["keyring"]["key_id"]}) + "\n")
        os.rename(pos_file + ".part", pos_file)

    neg_file = os.path.join(out, "human.jsonl")
    with open(neg_file, "w") as f:
        k = 0
        for line in lines(os.path.join(ROOT, "data/heldout/heldout.txt")):
            if k >= n_neg:
                break
            if any(line.startswith(p) for p in prompts):
                continue
            ids_ = tok.encode(line, True, False)
            if len(ids_) < 1 + 8 + 50:
                continue
            k += 1
            f.write(json.dumps({"id": k, "prompt_tokens": ids_[:9], "tokens": ids_[9:9 + 200]}) + "\n")

    def detect(path):
        res = os.path.join(out, os.path.basename(path).replace(".jsonl", ".det.jsonl"))
        if os.path.exists(res):
            os.remove(res)
        subprocess.run([binary, "detect", "-q", "--keyring", ring, "--jsonl", path, "-o", res,
                        "--method", os.environ.get("METHOD", "full")] + ctx)
        with open(res) as f:
            return [json.loads(l) for l in f]

    # Oracle perplexity of each positive (its new tokens given the prompt, the model at T = 1,
    # EOS left out), as `epwa eval` reports it; mean with a bootstrap 95% interval.
    model = epwa.Model()
    ppl = []
    for l in open(pos_file):
        p = json.loads(l)
        text = p["tokens"][:-1] if p["tokens"] and p["tokens"][-1] == model.config.eos_token_id else p["tokens"]
        if not text:
            continue
        seq = p["prompt_tokens"] + text
        logits = model.trace(seq).logits.astype(np.float64)
        rows = logits[len(p["prompt_tokens"]) - 1:len(seq) - 1]
        mx = rows.max(axis=1, keepdims=True)
        lse = (mx[:, 0] + np.log(np.exp(rows - mx).sum(axis=1)))
        nll = lse - rows[np.arange(len(text)), text]
        ppl.append(float(np.exp(nll.mean())))
    rng = np.random.default_rng(1)
    boot = sorted(float(np.mean(rng.choice(ppl, len(ppl)))) for _ in range(1000))
    ppl_summary = {"mean": float(np.mean(ppl)), "median": float(np.median(ppl)),
                   "mean_ci95": [boot[25], boot[974]], "texts": len(ppl)}

    pos = detect(pos_file)
    key_of = {json.loads(l)["id"]: json.loads(l)["key_id"] for l in open(pos_file)}
    neg = detect(neg_file)
    rows = []
    for m in [m for m in SIZES if m <= len(ids)]:
        zm = z_threshold(m)

        def fired(r, own):
            z = {k["id"]: k["z"] for k in r["keyring"]["per_key"]}
            ring_ids = ([own] if own else []) + [k for k in ids if k != own][: m - (1 if own else 0)]
            return r["n"] >= 10 and max(z[k] for k in ring_ids) > zm

        tp = sum(fired(r, key_of[r["id"]]) for r in pos)
        fp = sum(fired(r, None) for r in neg)
        own_z = sorted(next(k["z"] for k in r["keyring"]["per_key"] if k["id"] == key_of[r["id"]])
                       for r in pos)
        rows.append({"m": m, "z_threshold": zm, "tpr": tp / len(pos), "tp": tp, "positives": len(pos),
                     "tpr_ci95": wilson(tp, len(pos)), "fp": fp, "negatives": len(neg),
                     "fpr_ci95": wilson(fp, len(neg)), "own_z_median": own_z[len(own_z) // 2],
                     "max_negative_z": max(max(k["z"] for k in r["keyring"]["per_key"][:m]) for r in neg)})
    used = sorted(set(key_of.values()))
    summary = {"keys_used": len(used), "context_buckets": int(os.environ.get("CONTEXT_BUCKETS") or 0),
               "method": os.environ.get("METHOD", "full"),
               "min_new_tokens": int(os.environ.get("MIN_NEW_TOKENS", "0")),
               "ended_at_eos": sum(json.loads(l)["tokens"][-1] == model.config.eos_token_id
                                   for l in open(pos_file)),
               "perplexity": ppl_summary,
               "rows": rows}
    json.dump(summary, open(os.path.join(out, "rates.json"), "w"), indent=1)
    print(f"{len(pos)} positives (keys used: {len(used)} of {len(ids)}), {len(neg)} human negatives, "
          f"{summary['ended_at_eos']} positives ended at EOS; positives' perplexity mean "
          f"{ppl_summary['mean']:.2f} [{ppl_summary['mean_ci95'][0]:.2f}, {ppl_summary['mean_ci95'][1]:.2f}], "
          f"median {ppl_summary['median']:.2f}")
    print("| m | z_m | TPR [95%] | FPR [95%] | max negative z |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['m']} | {r['z_threshold']:.3f} | {r['tpr']:.3f} ({r['tp']}/{r['positives']}) "
              f"[{r['tpr_ci95'][0]:.3f}, {r['tpr_ci95'][1]:.3f}] | {r['fp']}/{r['negatives']} "
              f"[{r['fpr_ci95'][0]:.4f}, {r['fpr_ci95'][1]:.4f}] | {r['max_negative_z']:.2f} |")


if __name__ == "__main__":
    main()
