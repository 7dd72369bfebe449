#!/usr/bin/python3
"""Corpus detection speed (docs/SCALE.md): epwa.dask.detect_corpus with 1 and 2 one-thread workers
against `epwa detect --jsonl` on one thread, on the same documents of --tokens tokens each.

PYTHONPATH=build/python scripts/bench_dask.py --binary build/epwa \
    --model build/models/epwa-tiny-moe.gguf [--methods full,cspv,weighted,pepi] [--workers 1,2]
"""

import argparse
import atexit
import json
import os
import resource
import shutil
import subprocess
import tempfile
import time

import epwa
from distributed import Client, LocalCluster, get_task_stream
from epwa.corpus import detect_corpus


def cpu(client):
    """CPU seconds so far of a LocalCluster's workers and nannies and of this process (the client
    and the scheduler's thread)."""
    workers = sum(client.run(time.process_time).values())
    nannies = sum(client.run(time.process_time, nanny=True).values())
    return workers + nannies + time.process_time()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--binary", default="build/epwa")
    p.add_argument("--model", default="build/models/epwa-tiny-moe.gguf")
    p.add_argument("--docs", type=int, default=200)
    p.add_argument("--tokens", type=int, default=200)
    p.add_argument("--methods", default="full")
    p.add_argument("--workers", default="1,2")
    p.add_argument("--repeat", type=int, default=2, help="best of")
    a = p.parse_args()

    key = "bench-key"
    config = epwa.WatermarkConfig(key)
    model = epwa.Model(a.model, threads=1)
    tmp = tempfile.mkdtemp(prefix="bench-dask-")
    atexit.register(shutil.rmtree, tmp, True)
    # Watermarked generations (joined where one stops early) cut into documents of --tokens tokens,
    # reused round-robin: the speed does not depend on what the tokens say.
    ids, seed = [], 0
    while len(ids) < 8 * a.tokens:
        ids += model.generate("The river", max_new_tokens=a.tokens, temperature=0.9, seed=seed,
                              watermark=config).tokens
        seed += 1
    texts = [ids[i * a.tokens:(i + 1) * a.tokens] for i in range(8)]
    inp = os.path.join(tmp, "in.jsonl")
    with open(inp, "w") as f:
        for i in range(a.docs):
            f.write(json.dumps({"id": i, "tokens": texts[i % len(texts)]}) + "\n")
    shares = {}
    for n in {1, *map(int, a.workers.split(","))}:
        shares[n] = []
        for k in range(n):
            path = os.path.join(tmp, f"share-{n}-{k}.jsonl")
            with open(path, "w") as f:
                for i in range(k, a.docs, n):
                    f.write(json.dumps({"id": i, "tokens": texts[i % len(texts)]}) + "\n")
            shares[n].append(path)
    tokens = a.docs * a.tokens
    print(f"{a.docs} documents of {a.tokens} tokens ({tokens} tokens), model {a.model}")

    for method in a.methods.split(","):
        def cli_cpu():
            # CPU seconds of one command over every line: what the load of the shared machine
            # changes least.
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            cli_run()
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            return (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)

        def cli_run(n=1):
            # n commands side by side, each on its share of the lines: what n cores give the
            # command on this machine now (the control for n workers).
            env = dict(os.environ, EPWA_THREADS="1")
            t = time.perf_counter()
            procs = [subprocess.Popen([a.binary, "detect", "--key", key, "--model", a.model,
                                       "--load", "auto", "--method", method, "--jsonl", f, "-q"],
                                      env=env, stdout=subprocess.DEVNULL) for f in shares[n]]
            for proc in procs:
                proc.wait()
            return time.perf_counter() - t

        cli_s = min(cli_run() for _ in range(a.repeat))
        print(f"{method}: epwa detect --jsonl, 1 thread: {cli_s:.2f} s, "
              f"{tokens / cli_s:,.0f} tokens/s")
        cli_c = min(cli_cpu() for _ in range(a.repeat))
        base = None
        for n in map(int, a.workers.split(",")):
            with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                              dashboard_address=":0") as c, Client(c) as client:
                best = best_c = None
                for r in range(a.repeat):
                    out = os.path.join(tmp, f"out-{method}-{n}-{r}")
                    c0 = cpu(client)
                    with get_task_stream(client) as stream:
                        t = time.perf_counter()
                        detect_corpus(inp, a.model, config, method, out, client=client,
                                      progress=False, partition_size=max(1, a.docs // (8 * n)))
                        s = time.perf_counter() - t
                    c = cpu(client) - c0
                    if best is None or s < best:
                        # Seconds the workers spent in tasks, over the wall time: n when Dask
                        # keeps every worker busy, whatever the machine lends each one.
                        busy = sum(x["stop"] - x["start"] for task in stream.data
                                   for x in task["startstops"] if x["action"] == "compute") / s
                    best = s if best is None else min(best, s)
                    best_c = c if best_c is None else min(best_c, c)
            base = base or best
            if n > 1:
                side = min(cli_run(n) for _ in range(a.repeat))
                print(f"{method}: {n} commands side by side: {side:.2f} s, {tokens / side:,.0f} "
                      f"tokens/s, {cli_s / side:.2f}x of one")
            print(f"{method}: detect_corpus, {n} worker(s): {best:.2f} s, {tokens / best:,.0f} "
                  f"tokens/s, {base / best:.2f}x of 1 worker; vs the command: "
                  f"{(best * n - cli_s) / a.docs * 1000:+.1f} ms per document per core "
                  f"({100 * (best * n / cli_s - 1):+.1f}%); workers busy {busy:.2f} of {n}")
            print(f"{method}: CPU per document: the command {1000 * cli_c / a.docs:.1f} ms, "
                  f"detect_corpus on {n} worker(s) {1000 * best_c / a.docs:.1f} ms "
                  f"({100 * (best_c / cli_c - 1):+.1f}%; workers, nannies, client and scheduler)")


# The workers are spawned processes that import this file: only the main process runs it.
if __name__ == "__main__":
    main()
