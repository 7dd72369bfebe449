#!/usr/bin/env python3
"""Serving throughput side by side: `epwa serve` and llama.cpp's llama-server on the same GGUF,
the same threads and the same requests, in one run (docs/RESULTS.md "Serving").

For each concurrency (default 1, 4, 16) every server gets that many streamed completion requests at
once (distinct prompts, greedy, exactly `--max-tokens` new tokens each: EOS held back with
epwa's `min_tokens` and llama-server's `ignore_eos`) and the script reports the aggregate
decode rate (generated tokens / wall time of the round), the mean time to first token, and the
tokens generated. epwa is measured plain and watermarked (policy enforced). Rounds alternate between
the servers and repeat `--repeat` times; the best round of each is kept.

    scripts/bench_serve.py --model build/models/epwa-tiny-moe.gguf \
        --llama-server /path/to/llama-server [--streams 1,4,16] [--max-tokens 64] [--threads 2]

Only loopback is used; each server is started on a free port and stopped at the end.
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import http.client

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = ("river mill stone village winter harbor lantern orchard meadow bridge candle market "
         "forest garden letter journey").split()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_health(port, proc, timeout=300):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"bench_serve: a server exited early ({proc.args[0]})")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("bench_serve: a server did not become healthy")


TOKEN_PROMPTS = False  # --token-ids: prompts as ids, for GGUF files without a vocabulary


def prompt(i):
    if TOKEN_PROMPTS:
        return [1] + [100 + (i * 37 + k * 11) % 2000 for k in range(14)]
    return "The " + " ".join(WORDS[(i + k) % len(WORDS)] for k in range(12)) + " and the"


class Server:
    def __init__(self, name, cmd, port, native, env=None):
        self.name, self.port, self.native = name, port, native
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env={**os.environ, **(env or {})})
        wait_health(port, self.proc)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def one(self, i, max_tokens, out):
        """One streamed request: (seconds to the first token, tokens generated)."""
        if self.native:  # llama-server's own endpoint reports the tokens it predicted
            path, body = "/completion", {"prompt": prompt(i), "n_predict": max_tokens,
                                         "temperature": 0, "stream": True, "cache_prompt": False,
                                         "ignore_eos": True}
        else:
            path, body = "/v1/completions", {"prompt": prompt(i), "max_tokens": max_tokens,
                                             "min_tokens": max_tokens, "temperature": 0,
                                             "stream": True}
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        t0 = time.perf_counter()
        c.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        r = c.getresponse()
        first, tokens = None, 0
        for raw in r:
            line = raw.decode("utf-8", "replace").strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            ev = json.loads(line[6:])
            text = ev.get("content", "") if self.native else ev["choices"][0]["text"]
            if first is None and text:
                first = time.perf_counter() - t0
            if self.native and ev.get("stop"):
                tokens = ev.get("tokens_predicted", tokens)
            if not self.native and ev.get("usage"):
                tokens = ev["usage"]["completion_tokens"]
        out.append((first if first is not None else time.perf_counter() - t0, tokens))

    def round(self, streams, max_tokens):
        out, threads = [], []
        t0 = time.perf_counter()
        for i in range(streams):
            th = threading.Thread(target=self.one, args=(i, max_tokens, out))
            th.start()
            threads.append(th)
        for th in threads:
            th.join()
        wall = time.perf_counter() - t0
        tokens = sum(t for _, t in out)
        return {"tok_s": tokens / wall, "ttft": sum(f for f, _ in out) / len(out),
                "tokens": tokens, "wall": wall}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", required=True, help="GGUF file both servers load")
    ap.add_argument("--epwa", default=os.path.join(ROOT, "build", "epwa"))
    ap.add_argument("--llama-server", help="llama-server binary (left out: epwa alone)")
    ap.add_argument("--llama-arg", action="append", default=[],
                    help="one more argument for llama-server (repeat; e.g. --llama-arg=-ngl "
                         "--llama-arg=99 on a GPU, where epwa uses the GPU by itself)")
    ap.add_argument("--token-ids", action="store_true",
                    help="send prompts as token ids (GGUF files without a vocabulary; llama-server "
                         "cannot serve those, so it is left out)")
    ap.add_argument("--streams", default="1,4,16")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    global TOKEN_PROMPTS
    TOKEN_PROMPTS = a.token_ids
    streams = [int(s) for s in a.streams.split(",")]
    slots, ctx = max(streams), 512
    keyring = os.path.join(tempfile.mkdtemp(), "keys.json")
    with open(os.open(keyring, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
        json.dump({"default": "k", "keys": {"k": "bench-serve-key"}}, f)

    def epwa(name, extra):
        port = free_port()
        return Server(name, [a.epwa, "serve", "--model", a.model, "--port", str(port), "-q",
                             "--slots", str(slots), "--queue", str(slots), "--context", str(ctx),
                             "--max-tokens", str(a.max_tokens)] + extra, port, False,
                      {"EPWA_THREADS": str(a.threads)})  # the kernels' thread pool

    def llama():
        port = free_port()
        return Server("llama-server", [a.llama_server, "-m", a.model, "--port", str(port),
                                       "-t", str(a.threads), "-tb", str(a.threads), "-np",
                                       str(slots), "-c", str(slots * ctx), "-cb"] + a.llama_arg,
                      port, True)

    makers = [("epwa", lambda: epwa("epwa", [])),
              ("epwa (watermarked)",
               lambda: epwa("epwa (watermarked)", ["--policy", "enforced", "--keyring", keyring])),
              ("llama-server", llama)]
    if not a.llama_server or a.token_ids:
        makers = makers[:2]
    best = {}
    for rep in range(a.repeat):
        for name, make in makers:  # one server at a time: they would share the cores
            s = make()
            try:
                s.round(1, 8)  # warm-up
                for n in streams:
                    r = s.round(n, a.max_tokens)
                    key = (name, n)
                    if key not in best or r["tok_s"] > best[key]["tok_s"]:
                        best[key] = r
                    print(f"# rep {rep + 1} {name} {n} streams: {r['tok_s']:.1f} tok/s, "
                          f"ttft {r['ttft'] * 1000:.0f} ms, {r['tokens']} tokens", file=sys.stderr)
            finally:
                s.stop()
    print("| server | streams | tokens/s (aggregate) | mean time to first token (ms) | tokens |")
    print("|---|---:|---:|---:|---:|")
    for name, _ in makers:
        for n in streams:
            r = best[(name, n)]
            print(f"| {name} | {n} | {r['tok_s']:.1f} | {r['ttft'] * 1000:.0f} | {r['tokens']} |")
    for n in streams:
        e, w = best[("epwa", n)], best[("epwa (watermarked)", n)]
        peer = (f"epwa / llama-server {e['tok_s'] / best[('llama-server', n)]['tok_s']:.2f}x, "
                if ("llama-server", n) in best else "")
        print(f"\n{n} streams: {peer}watermarked / plain {w['tok_s'] / e['tok_s']:.3f}, epwa {n} / "
              f"{streams[0]} stream {e['tok_s'] / best[('epwa', streams[0])]['tok_s']:.2f}x", end="")
    print()


if __name__ == "__main__":
    main()
