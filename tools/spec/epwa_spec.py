#!/usr/bin/env python3
"""Independent reference implementation of EPW-A version 2 (docs/SPEC.md), standard library only.

Implements IRSH-v1 and IRSH-v2 (router hashes), GL-v1 (green lists) and the CSPV sampler, reads the
routers of the reference checkpoints of every family (tests/data/ref/*, f32 safetensors) by itself,
and prints the test vectors that tests/data/spec_vectors.json holds:

    python3 tools/spec/epwa_spec.py > tests/data/spec_vectors.json
"""
import hashlib
import hmac
import json
import math
import os
import struct
import sys

REF_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "data", "ref")

MASK32 = 0xFFFFFFFF
MASK64 = 0xFFFFFFFFFFFFFFFF


def f32_bits(x):
    """Bits of x rounded to float32 (round-to-nearest-even, like a C++ cast from double)."""
    return struct.unpack("<I", struct.pack("<f", x))[0]


def bf16_from_f32_bits(u):
    """float32 bits -> bfloat16 bits, round-to-nearest-even; NaN stays a quiet NaN."""
    if (u & 0x7FFFFFFF) > 0x7F800000:
        return ((u >> 16) | 0x40) & 0xFFFF
    u = (u + 0x7FFF + ((u >> 16) & 1)) & MASK32
    return u >> 16


def irsh_v1(routers):
    """routers: list of (layer, E, D, [E*D float32 bit patterns], expert-major)."""
    h = hashlib.sha256(b"EPWA-IRSH-v1")
    for layer, e, d, bits in routers:
        assert len(bits) == e * d
        h.update(struct.pack("<III", layer, e, d))
        h.update(b"".join(struct.pack("<H", bf16_from_f32_bits(b)) for b in bits))
    return h.hexdigest()


def bf16_bytes(bits):
    return b"".join(struct.pack("<H", bf16_from_f32_bits(b)) for b in bits)


def irsh_v2(num_layers, rule, routers):
    """routers: list of (transformer layer, E, D, [E*D float32 bits], [E bias bits] or []), MoE order."""
    h = hashlib.sha256(b"EPWA-IRSH-v2")
    rule = rule.encode("ascii")
    h.update(struct.pack("<II", num_layers, len(routers)))
    h.update(b"".join(struct.pack("<I", r[0]) for r in routers))
    h.update(struct.pack("<I", len(rule)) + rule)
    for m, (block, e, d, bits, bias) in enumerate(routers):
        assert len(bits) == e * d and len(bias) in (0, e)
        h.update(struct.pack("<III", m, e, d) + bf16_bytes(bits))
        h.update(struct.pack("<I", len(bias)) + bf16_bytes(bias))
    return h.hexdigest()


def routing_rule(config):
    """The routing rule string of a config.json (section 0; GPT-OSS's biased top-k softmax)."""
    k = config["num_experts_per_tok"]
    mt = config["model_type"]
    if mt == "gpt_oss":  # GptOssTopKRouter: top-k of W x + b, softmax over the k
        return f"bias,top{k},softmax"
    if mt in ("deepseek_v2", "deepseek_v3"):
        v3 = mt == "deepseek_v3"
        renorm = config.get("norm_topk_prob", v3) and (v3 or k > 1)
        groups = config.get("n_group") or 1
        if not v3 and config.get("topk_method", "greedy") == "greedy":
            groups = 1
        scale = float(config.get("routed_scaling_factor", 2.5 if v3 else 1.0))
        rule = f"{'sigmoid' if v3 else 'softmax'},top{k},{'renorm' if renorm else 'raw'}"
        if not v3 and groups == 1 and scale == 1.0:
            return rule
        if v3:
            rule += ",bias"
        if groups > 1:
            rule += f",group{groups}/{config.get('topk_group') or 1}{'top2' if v3 else 'max'}"
        return rule + f",scale{float_g9(scale)}"
    renorm = True if mt == "mixtral" else config.get("norm_topk_prob", mt == "qwen3_moe")
    if mt == "deepseek":  # MoEGate renormalises only when top_k > 1
        renorm = renorm and k > 1
    return f"softmax,top{k},{'renorm' if renorm else 'raw'}"


def float_g9(x):
    """The scale as C's %.9g of the float32 value prints it."""
    text = "%.9g" % f32(x)
    return text


def moe_layers(config):
    """Transformer layers with experts: transformers' rule for each family."""
    n = config["num_hidden_layers"]
    if config["model_type"] in ("qwen2_moe", "qwen3_moe"):
        step = config.get("decoder_sparse_step", 1)
        dense = config.get("mlp_only_layers") or []
        return [l for l in range(n) if l not in dense and (l + 1) % step == 0]
    if config["model_type"] in ("deepseek_v2", "deepseek_v3"):
        return [l for l in range(n) if l >= config.get("first_k_dense_replace", 0)]
    if config["model_type"] == "deepseek":
        first, freq = config.get("first_k_dense_replace", 0), config.get("moe_layer_freq", 1)
        return [l for l in range(n) if l >= first and l % freq == 0]
    return list(range(n))


def read_f32_safetensors(path, names):
    """The named F32 tensors of a safetensors file, as lists of float32 bit patterns."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        base = 8 + n
        out = {}
        for name in names:
            t = header[name]
            assert t["dtype"] == "F32", name
            begin, end = t["data_offsets"]
            f.seek(base + begin)
            raw = f.read(end - begin)
            out[name] = list(struct.unpack(f"<{len(raw) // 4}I", raw))
    return out


def family_hash(folder):
    """The router hash epwa must print for a reference checkpoint (v1 for Mixtral, else v2)."""
    with open(os.path.join(folder, "config.json")) as f:
        config = json.load(f)
    mt = config["model_type"]
    layers = moe_layers(config)
    part = "block_sparse_moe" if mt == "mixtral" else "mlp"
    router = "router" if mt == "gpt_oss" else "gate"  # GPT-OSS: mlp.router, with a bias
    names = [f"model.layers.{l}.{part}.{router}.weight" for l in layers]
    # GPT-OSS's router bias and DeepSeek-V3's correction bias change the choice: hashed with the
    # router.
    biases = ([f"model.layers.{l}.mlp.router.bias" for l in layers] if mt == "gpt_oss" else
              [f"model.layers.{l}.mlp.gate.e_score_correction_bias" for l in layers]
              if mt == "deepseek_v3" else [])
    bits = read_f32_safetensors(os.path.join(folder, "model.safetensors"), names + biases)
    e = config.get("num_local_experts", config.get("num_experts", config.get("n_routed_experts")))
    d = config["hidden_size"]
    if mt == "mixtral":
        return "v1", irsh_v1([(m, e, d, bits[n]) for m, n in enumerate(names)])
    routers = [(l, e, d, bits[n], bits[biases[i]] if biases else [])
               for i, (l, n) in enumerate(zip(layers, names))]
    return "v2", irsh_v2(config["num_hidden_layers"], routing_rule(config), routers)


def spec_routers():
    """The small deterministic router set of the test vectors (defined identically in C++)."""
    routers = []
    for layer in (0, 2):
        e, d = 4, 6
        bits = [f32_bits(((i * 37 + layer * 11) % 101 - 50) / 7.0) for i in range(e * d)]
        routers.append((layer, e, d, bits))
    # Rounding cases: ties to even (down and up), -0, overflow to inf, a subnormal, exact values.
    special = [1.00390625, 1.01171875, -0.0, 3.4e38, 1e-40, -2.5, 65504.0, 0.1]
    routers.append((5, 2, 4, [f32_bits(x) for x in special]))
    return routers


def expert_key(key, expert, router_hash):
    return hmac.new(key, f"{expert}:{router_hash}".encode("ascii"), hashlib.sha256).digest()


def words(k_e):
    i = 0
    while True:
        block = hmac.new(k_e, struct.pack("<Q", i), hashlib.sha256).digest()
        yield from struct.unpack("<8I", block)
        i += 1


def green_list(key, router_hash, vocab, gamma, expert):
    """The green tokens of one expert, in shuffle order (the first floor(gamma * V) entries)."""
    stream = words(expert_key(key, expert, router_hash))
    perm = list(range(vocab))
    for i in range(vocab - 1, 0, -1):
        n = i + 1
        limit = (1 << 32) - ((1 << 32) % n)
        while True:
            r = next(stream)
            if r < limit:
                break
        j = r % n
        perm[i], perm[j] = perm[j], perm[i]
    return perm[: math.floor(gamma * vocab)]


def context_bucket(key, token, buckets):
    """CTX-v1 (section 10): the keyed bucket of a previous token."""
    d = hmac.new(key, b"EPWA-CTX-v1" + struct.pack("<I", token), hashlib.sha256).digest()
    return struct.unpack("<I", d[:4])[0] % buckets


def context_list_key(key, buckets):
    """CTX-v1: the key of the E x H lists, so that none coincides with a GL-v1 list of `key`."""
    return b"EPWA-CTX-v1:" + str(buckets).encode("ascii") + b":" + key


def cspv_seed(tokens):
    h = hashlib.sha256(b"EPWA-CSPV-v1" + b"".join(struct.pack("<i", t) for t in tokens)).digest()
    return struct.unpack("<Q", h[:8])[0]


class SplitMix64:
    def __init__(self, seed):
        self.state = seed & MASK64

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def below(self, n):
        rem = (1 << 64) % n
        while True:
            r = self.next()
            if r < (1 << 64) - rem:
                return r % n


def cspv_sample(confidences, n, seed):
    """[(index, stratum)]: stratum 0 = lowest confidence, 1 = highest, 2 = uniform from the rest."""
    m = len(confidences)
    third = n // 3
    k_low = min(third, m)
    k_high = min(third, m - k_low)
    k_rand = min(n - 2 * third, m - k_low - k_high)
    order = sorted(range(m), key=lambda i: (confidences[i], i))
    picks = [(order[i], 0) for i in range(k_low)] + [(order[m - 1 - i], 1) for i in range(k_high)]
    taken = {i for i, _ in picks}
    rest = [i for i in range(m) if i not in taken]
    rng = SplitMix64(seed)
    for i in range(k_rand):
        j = i + rng.below(len(rest) - i)
        rest[i], rest[j] = rest[j], rest[i]
        picks.append((rest[i], 2))
    return picks


def keyring_rotation_secret(secrets):
    """KR-v1 (section 9): SHA-256 of the tag and each key, length-prefixed, in keyring order."""
    msg = b"EPWA-KR-v1" + b"".join(struct.pack("<I", len(k)) + k for k in secrets)
    return hashlib.sha256(msg).digest()


def keyring_pick(secret, seed, prompt, m):
    """The key index of one response: HMAC(secret, u64 seed || u32 prompt ids), first 8 bytes mod m."""
    msg = struct.pack("<Q", seed) + b"".join(struct.pack("<I", t & 0xffffffff) for t in prompt)
    return struct.unpack("<Q", hmac.new(secret, msg, hashlib.sha256).digest()[:8])[0] % m


def top1_confidence(logits, over=0):
    """(top-1 expert, router confidence) of section 3: the argmax (ties to the lower index) and its
    softmax probability over all logits, or over the `over` largest (GPT-OSS's top-k softmax)."""
    best = max(range(len(logits)), key=lambda e: (logits[e], -e))
    kept = sorted(logits, reverse=True)[:over] if over else logits
    return best, 1.0 / math.fsum(math.exp(l - logits[best]) for l in kept)


def sigmoid_top1_confidence(logits, bias, groups, kept, k, renorm):
    """DeepSeek-V3's pathway (section 0): the selection repeated in f32 (scores s, choice s + b,
    groups by the f32 sum of their two best, ties to the lower index); the first chosen and its
    score over the sum of the k chosen scores (raw: the score)."""
    s = [f32(1.0 / (1.0 + math.exp(-l))) for l in logits]
    c = [f32(x + b) for x, b in zip(s, bias)]
    size = len(c) // groups
    def best(values, n):
        return sorted(range(len(values)), key=lambda i: (-values[i], i))[:n]
    if groups > 1:
        score = []
        for g in range(groups):
            a, b = best(c[g * size:(g + 1) * size], 2)
            score.append(f32(c[g * size + a] + c[g * size + b]))
        keep = set(best(score, kept))
        c = [x if e // size in keep else -math.inf for e, x in enumerate(c)]
    chosen = best(c, k)
    top = s[chosen[0]]
    return chosen[0], top / math.fsum(s[e] for e in chosen) if renorm else top


def exp_seed(key, router_hash, expert, previous):
    """EXP-v1 (section 11): the seed of a step, HMAC of the tag, the router hash and the context."""
    msg = b"EPWA-EXP-v1" + router_hash.encode("ascii") + struct.pack("<II", expert, previous)
    return struct.unpack("<Q", hmac.new(key, msg, hashlib.sha256).digest()[:8])[0]


def exp_uniform(seed, token):
    """EXP-v1: SplitMix64's finalizer of seed + (token + 1) * golden ratio, top 53 bits, centred."""
    z = (seed + (token + 1) * 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    z ^= z >> 31
    return ((z >> 11) + 0.5) * 2.0 ** -53


def exp_race(probs, seed):
    """EXP-v1: the token with the largest ln(r) / p among those with p > 0 (ties: the first)."""
    best, score = None, -math.inf
    for v, p in enumerate(probs):
        if p > 0 and math.log(exp_uniform(seed, v)) / p > score:
            best, score = v, math.log(exp_uniform(seed, v)) / p
    return best


def gamma_sf(n, s):
    """P[Gamma(n, 1) >= s] = e^-s sum_{k<n} s^k / k!, in exact rational steps then to float."""
    from fractions import Fraction
    term, total = Fraction(1), Fraction(1)
    fs = Fraction(s)
    for k in range(1, n):
        term = term * fs / k
        total += term
    return float(total) * math.exp(-s)


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def entropy(logits):
    """Shannon entropy (nats) of softmax(logits), relative to the maximum (section 4/5, entropy
    threshold); -inf logits have probability zero."""
    m = max(logits)
    finite = [x - m for x in logits if x != float("-inf")]
    z = sum(math.exp(d) for d in finite)
    return math.log(z) - sum(math.exp(d) * d for d in finite) / z


def main():
    routers = spec_routers()
    router_hash = irsh_v1(routers)
    key = b"test-key"
    out = {
        "scheme": "EPW-A v2",
        "irsh": {
            "routers": "layers 0 and 2: E=4, D=6, w[i] = f32(((i*37 + layer*11) % 101 - 50) / 7.0); "
            "layer 5: E=2, D=4, the rounding cases below",
            "hash": router_hash,
        },
        "irsh_v2": {
            "routers": "the same three matrices as MoE layers 0, 1, 2 at transformer layers 0, 2, 5 of 7; "
            "MoE layer 1 has the bias [0.5, -1.25, 3.0, 1e-3]",
            "layers": 7,
            "rule": "softmax,top2,raw",
            "hash": irsh_v2(7, "softmax,top2,raw",
                            [(0, 4, 6, routers[0][3], []),
                             (2, 4, 6, routers[1][3], [f32_bits(x) for x in (0.5, -1.25, 3.0, 1e-3)]),
                             (5, 2, 4, routers[2][3], [])]),
        },
        "families": [],
        "bf16": [[b, bf16_from_f32_bits(b)] for b in routers[2][3]],
        "green_lists": [],
    }
    for vocab in (1000, 32000):
        for gamma in (0.5, 0.25):
            entry = {"key": key.decode(), "router_hash": router_hash, "vocab": vocab, "gamma": gamma,
                     "experts": 4, "green_count": math.floor(gamma * vocab), "lists": []}
            for e in range(4):
                g = green_list(key, router_hash, vocab, gamma, e)
                digest = hashlib.sha256(b"".join(struct.pack("<I", t) for t in sorted(g))).hexdigest()
                entry["lists"].append({"expert": e, "first16": g[:16], "sorted_sha256": digest})
            out["green_lists"].append(entry)
    for name in ("gqa", "qwen2moe", "olmoe", "qwen3moe", "deepseek", "deepseek2", "deepseek2-lite",
                 "deepseek3"):
        version, h = family_hash(os.path.join(REF_DIR, name))
        out["families"].append({"model": name, "irsh": version, "hash": h})
    for name in ("gptoss",):  # families epwa reads from safetensors only (no GGUF yet)
        version, h = family_hash(os.path.join(REF_DIR, name))
        out["safetensors_families"] = out.get("safetensors_families", [])
        out["safetensors_families"].append({"model": name, "irsh": version, "hash": h})
    rows = [[f32(((e * 5) % 8 - 3) / 2.0) for e in range(8)],
            [f32(x) for x in (1.0, 3.0, 3.0, 0.0, -2.0, 2.5, 0.25, 3.0)]]
    out["confidence"] = {
        "logits": "row 0: l[e] = f32(((e*5) % 8 - 3) / 2.0), e < 8; row 1: 1, 3, 3, 0, -2, 2.5, 0.25, 3",
        "rows": [[{"over": over, "expert": top1_confidence(r, over)[0],
                   "confidence": repr(top1_confidence(r, over)[1])} for over in (0, 4, 2)]
                 for r in rows],
    }
    # DeepSeek-V3's rule on E = 8 in 4 groups of 2, 2 kept, top-3.
    bias = [f32(x) for x in (0.0, 0.5, -0.25, 0.125, 0.75, -0.5, 0.25, 0.0)]
    rows = [[f32(x) for x in (2.0, -1.0, 0.5, 1.5, -0.5, 3.0, 0.25, 1.0)],
            [f32(((e * 3) % 8 - 4) / 4.0) for e in range(8)],
            [f32(x) for x in (-6.0, 6.0, 2.0, 2.0, 1.0, 1.0, 0.0, 0.0)]]  # best s + b in a dropped group
    out["sigmoid_pathway"] = {
        "bias": [repr(b) for b in bias],
        "groups": 4, "groups_kept": 2, "top_k": 3,
        "logits": "row 0: 2, -1, 0.5, 1.5, -0.5, 3, 0.25, 1; row 1: l[e] = f32(((e*3) % 8 - 4) / 4.0); "
                  "row 2: -6, 6, 2, 2, 1, 1, 0, 0",
        "argmax": [max(range(8), key=lambda e: (r[e], -e)) for r in rows],
        "rows": [[{"renormalize": renorm,
                   "expert": sigmoid_top1_confidence(r, bias, 4, 2, 3, renorm)[0],
                   "confidence": repr(sigmoid_top1_confidence(r, bias, 4, 2, 3, renorm)[1])}
                  for renorm in (True, False)] for r in rows],
    }
    tokens = [1] + [(i * 7919) % 32000 for i in range(1, 40)]
    # Confidences exactly representable in float32 so both sides sort the same values.
    conf = [f32(((i * 13) % 29) / 29.0 + 0.125) for i in range(40)]
    seed = cspv_seed(tokens)
    out["cspv"] = {
        "tokens": tokens,
        "seed": str(seed),
        "confidences": "c[i] = f32(((i*13) % 29) / 29.0 + 0.125), i < 40",
        "sample_n": 10,
        "picks": [[i, s] for i, s in cspv_sample(conf, 10, seed)],
    }
    rows = [[f32(((v * 17 + j * 5) % 23) / (j + 1.0)) for v in range(32)] for j in range(4)]
    rows.append([f32(40.0) if v == 3 else f32(0.0) for v in range(32)])
    out["entropy"] = {
        "logits": "row j < 4: l[v] = f32(((v*17 + j*5) % 23) / (j + 1.0)), v < 32; row 4: 40 at v = 3, else 0",
        "values": [repr(entropy(r)) for r in rows],
        "threshold": 2.2,
        "eligible": [j for j, r in enumerate(rows) if entropy(r) >= 2.2],
    }
    buckets = 16
    ctx_key = context_list_key(key, buckets)
    ctx_lists = []
    for expert, prev in ((0, 0), (1, 7), (3, 999)):
        c = expert * buckets + context_bucket(key, prev, buckets)
        g = green_list(ctx_key, router_hash, 1000, 0.5, c)
        digest = hashlib.sha256(b"".join(struct.pack("<I", t) for t in sorted(g))).hexdigest()
        ctx_lists.append({"expert": expert, "previous_token": prev, "context": c, "first16": g[:16],
                          "sorted_sha256": digest})
    out["context_buckets"] = {
        "key": key.decode(), "router_hash": router_hash, "vocab": 1000, "gamma": 0.5, "experts": 4,
        "buckets": buckets,
        "bucket_of_tokens_0_to_15": [context_bucket(key, t, buckets) for t in range(16)],
        "lists": ctx_lists,
    }
    ring = [b"test-key-a", b"test-key-b", b"test-key-c", b"test-key-d"]
    prompt = [1, 15043, 3186]
    secret = keyring_rotation_secret(ring)
    out["keyring"] = {
        "keys": [k.decode() for k in ring],
        "rotation_secret": secret.hex(),
        "prompt": prompt,
        "picks": [keyring_pick(secret, seed, prompt, len(ring)) for seed in range(16)],
        "picks_prompt_2": [keyring_pick(secret, seed, [1, 2], len(ring)) for seed in range(16)],
    }
    probs = [0.5, 0.25, 0.125, 0.125, 0.0]
    cases = []
    for expert, prev in ((0, 0), (1, 7), (3, 999)):
        seed = exp_seed(key, router_hash, expert, prev)
        cases.append({"expert": expert, "previous_token": prev, "seed": str(seed),
                      "uniforms_0_to_4": [repr(exp_uniform(seed, v)) for v in range(5)],
                      "race": exp_race(probs, seed)})
    out["exp"] = {
        "key": key.decode(), "router_hash": router_hash, "probs": probs, "cases": cases,
        "gamma_tail": [[n, s, repr(gamma_sf(n, s))] for n, s in ((1, 3.0), (10, 20.0), (40, 70.5))],
    }
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
