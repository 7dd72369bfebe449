#!/usr/bin/env python3
"""Detection speed from Python against the epwa command, on the same text and key (docs/PYTHON.md).

Usage: PYTHONPATH=build/python python3 scripts/bench_python.py [--texts 200] [--tokens 500]

The command scores a --jsonl file of N copies of one watermarked text; its time less that of a
one-line file (start-up and model load) is set against Detector.detect_batch, a detect() loop and
a detect() loop on two threads. Each figure is the best of three runs.
"""

import argparse
import json
import pathlib
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import epwa


def best(fn, runs=3):
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main():
    root = pathlib.Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=200, help="detections per run")
    ap.add_argument("--tokens", type=int, default=500, help="new tokens of the text, at most")
    ap.add_argument("--epwa", default=str(root / "build" / "epwa"), help="the command to compare")
    a = ap.parse_args()

    key = "bench-python"
    model = epwa.Model()
    config = epwa.WatermarkConfig(key)
    text = model.generate("Once upon a time", max_new_tokens=a.tokens, temperature=0.8, seed=1,
                          watermark=config).text
    det = epwa.Detector(model, config)
    first = det.detect(text)
    tokens = first.prompt_tokens + first.text_tokens
    with tempfile.TemporaryDirectory() as tmp:
        many, one = pathlib.Path(tmp, "many.jsonl"), pathlib.Path(tmp, "one.jsonl")
        line = json.dumps({"text": text}) + "\n"
        many.write_text(line * a.texts)
        one.write_text(line)
        out = subprocess.run([a.epwa, "detect", "--key", key, "--jsonl", str(one), "-q", "--load",
                              "auto"],
                             capture_output=True, text=True, check=False).stdout
        assert json.loads(out)["z"] == first.z_score, "the command and Python disagree"

        def cli(path):
            return lambda: subprocess.run([a.epwa, "detect", "--key", key, "--jsonl", str(path),
                                           "-q", "--load", "auto"], stdout=subprocess.DEVNULL)
        start = best(cli(one))
        rows = [("epwa detect --jsonl (less start-up %.3f s)" % start, best(cli(many)) - start)]

    def threads():
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda _: det.detect(text), range(a.texts)))
    rows += [
        ("Detector.detect_batch", best(lambda: det.detect_batch([text] * a.texts))),
        ("Detector.detect loop", best(lambda: [det.detect(text) for _ in range(a.texts)])),
        ("Detector.detect, 2 threads", best(threads)),
    ]
    print(f"{a.texts} detections of a {tokens}-token sequence (z {first.z_score:.2f})")
    for name, secs in rows:
        print(f"{name:48s} {secs:8.3f} s {a.texts * tokens / secs:10,.0f} tokens/s")


if __name__ == "__main__":
    main()
