#!/usr/bin/env python3
"""Prints the ratio table of a scripts/bench_peers.sh run: for each file and test (ppN, tgN), epwa's
and llama.cpp's mean tokens/s and their ratio (> 1: epwa faster).

    python3 tools/bench/peer_table.py OUT [PEER_NAME]
"""
import glob
import json
import os
import sys


def epwa_rows(path):
    with open(path) as f:
        d = json.load(f)
    return d.get("commit", "?"), {r["test"]: r["tokens_per_s"] for r in d["tests"] if r.get("watermark", "none") == "none"}


def llama_rows(path):
    with open(path) as f:
        runs = json.load(f)
    out, build = {}, "?"
    for r in runs:
        build = f'{r.get("build_commit", "?")} ({r.get("build_number", "?")})'
        test = f'pp{r["n_prompt"]}' if r["n_prompt"] else f'tg{r["n_gen"]}'
        out[test] = r["avg_ts"]
    return build, out


def main():
    out = sys.argv[1]
    peer_name = sys.argv[2] if len(sys.argv) > 2 else "llama.cpp"
    print(f"| file | test | epwa t/s | {peer_name} t/s | epwa / {peer_name} |")
    print("|---|---|---:|---:|---:|")
    commits = set()
    for path in sorted(glob.glob(os.path.join(out, "epwa-*.json"))):
        name = os.path.basename(path)[len("epwa-"):-len(".json")]
        peer = os.path.join(out, f"llama-{name}.json")
        if not os.path.exists(peer):
            print(f"| {name} | - | - | {peer_name} failed | - |")
            continue
        commit, mine = epwa_rows(path)
        build, theirs = llama_rows(peer)
        commits.add(f"epwa {commit}, {peer_name} {build}")
        for test in sorted(mine, key=lambda t: (t[:2], int(t[2:]))):
            if test in theirs:
                print(f"| {name} | {test} | {mine[test]:.1f} | {theirs[test]:.1f} | {mine[test] / theirs[test]:.2f} |")
    for c in sorted(commits):
        print(f"\n{c}")


if __name__ == "__main__":
    main()
