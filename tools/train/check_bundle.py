#!/usr/bin/env python3
"""Independent check of the bundle, stdlib only (no torch): a plain-Python Mixtral forward (Hub tensor
names, half-split RoPE, GQA, SwiGLU experts w2(silu(w1 x) * w3 x), softmax top-2 renormalised) over one
sequence of tests/data/bundle_ref.json, compared with transformers' numbers stored there.

    check_bundle.py [SEQUENCE_INDEX=1]      (about 20 s for the 7-token sequence)
"""
import os
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import json, math, struct, sys
d = open(ROOT + '/models/epwa-tiny-moe/model.safetensors','rb').read()
n = struct.unpack('<Q', d[:8])[0]; hdr = json.loads(d[8:8+n]); base = 8+n
def T(name):
    m = hdr[name]; a, b = m['data_offsets']; raw = d[base+a:base+b]
    u = struct.unpack(f'<{len(raw)//2}H', raw)
    fl = struct.unpack(f'<{len(u)}f', struct.pack(f'<{len(u)}I', *[x << 16 for x in u]))
    sh = m['shape']
    return [fl[i*sh[1]:(i+1)*sh[1]] for i in range(sh[0])] if len(sh) == 2 else list(fl)
cfg = json.load(open(ROOT + '/models/epwa-tiny-moe/config.json'))
H, nh, kvh, hd, L, E = 256, 8, 2, 32, 6, 8
def mv(W, x): return [sum(w*v for w, v in zip(row, x)) for row in W]
def rms(x, w): s = math.sqrt(sum(v*v for v in x)/len(x) + 1e-5); return [v/s*g for v, g in zip(x, w)]
def rope(v, pos):
    out = list(v); half = hd//2
    for i in range(half):
        f = pos / (10000 ** (2*i/hd)); c, s = math.cos(f), math.sin(f)
        out[i] = v[i]*c - v[i+half]*s; out[i+half] = v[i+half]*c + v[i]*s
    return out
ref = json.load(open(ROOT + '/tests/data/bundle_ref.json'))
seq = ref['sequences'][int(sys.argv[1]) if len(sys.argv) > 1 else 1]
ids = seq['ids']
emb = T('model.embed_tokens.weight')
W = {}
for l in range(L):
    p = f'model.layers.{l}.'
    W[l] = {k: T(p+k+'.weight') for k in ['self_attn.q_proj','self_attn.k_proj','self_attn.v_proj','self_attn.o_proj','input_layernorm','post_attention_layernorm','block_sparse_moe.gate']}
    for e in range(E):
        for w in ('w1','w2','w3'): W[l][f'{e}{w}'] = T(p+f'block_sparse_moe.experts.{e}.{w}.weight')
hs = [list(emb[t]) for t in ids]
K = {l: [] for l in range(L)}; V = {l: [] for l in range(L)}
maxd = 0
for l in range(L):
    w = W[l]; new = []
    for pos, x in enumerate(hs):
        xn = rms(x, w['input_layernorm'])
        q, k, v = mv(w['self_attn.q_proj'], xn), mv(w['self_attn.k_proj'], xn), mv(w['self_attn.v_proj'], xn)
        K[l].append([rope(k[h*hd:(h+1)*hd], pos) for h in range(kvh)]); V[l].append([v[h*hd:(h+1)*hd] for h in range(kvh)])
        att = []
        for h in range(nh):
            qh = rope(q[h*hd:(h+1)*hd], pos); g = h // (nh//kvh)
            sc = [sum(a*b for a, b in zip(qh, K[l][j][g]))/math.sqrt(hd) for j in range(pos+1)]
            m = max(sc); ex = [math.exp(s-m) for s in sc]; z = sum(ex)
            att += [sum(ex[j]/z*V[l][j][g][i] for j in range(pos+1)) for i in range(hd)]
        x = [a+b for a, b in zip(x, mv(w['self_attn.o_proj'], att))]
        xn = rms(x, w['post_attention_layernorm'])
        lg = mv(w['block_sparse_moe.gate'], xn)
        rl = seq['layers'][l]['router_logits'][pos]
        maxd = max(maxd, max(abs(a-b) for a, b in zip(lg, rl)))
        m = max(lg); pr = [math.exp(v-m) for v in lg]; z = sum(pr); pr = [v/z for v in pr]
        top = sorted(range(E), key=lambda e: -pr[e])[:2]
        assert top == seq['layers'][l]['top2_experts'][pos], (l, pos, top)
        s2 = pr[top[0]] + pr[top[1]]; out = [0.0]*H
        for e in top:
            a = mv(w[f'{e}w1'], xn); b = mv(w[f'{e}w3'], xn)
            hmid = [ai/(1+math.exp(-ai))*bi for ai, bi in zip(a, b)]
            y = mv(w[f'{e}w2'], hmid)
            out = [o + pr[e]/s2*yi for o, yi in zip(out, y)]
        new.append([a+b for a, b in zip(x, out)])
    hs = new
norm = T('model.norm.weight'); head = T('lm_head.weight')
for i, pos in enumerate(seq['logits_positions']):
    lo = mv(head, rms(hs[pos], norm))
    r = seq['logits'][i]
    print('pos', pos, 'max|logit diff|', max(abs(a-b) for a, b in zip(lo, r)), 'argmax', lo.index(max(lo)), seq['argmax'][pos])
print('max router logit diff', maxd)
