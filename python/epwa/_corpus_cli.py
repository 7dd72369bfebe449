"""`python3 -m epwa.dask`: detect_corpus from the command line (docs/SCALE.md). User errors are
one line, `epwa: error: ...`, and exit status 2, as the epwa command's."""

from __future__ import annotations

import argparse
import json
import os
import sys


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        sys.stderr.write(f"epwa: error: {message}\n")
        sys.exit(2)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python3 -m epwa.dask",
                description="Detect the EPW-A watermark in a corpus on a Dask cluster; results "
                            "per partition under OUT_DIR, resumable (docs/SCALE.md).")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help=".jsonl/.ndjson files (a line each, as epwa detect --jsonl), other files "
                        "(one document each), folders or glob patterns")
    p.add_argument("-o", "--out-dir", required=True,
                   help="results folder: new or empty, or the same job's to resume it")
    p.add_argument("--model", required=True, help="model path (a .gguf shares its pages "
                                                  "between the workers of a host)")
    p.add_argument("--load", default="auto",
                   choices=["standard", "fast", "4bit", "8bit", "auto"])
    key = p.add_mutually_exclusive_group()
    key.add_argument("--keyring", help="JSON keyring {\"default\": id, \"keys\": {id: secret}}, "
                                       "mode 0600 (epwa serve's)")
    key.add_argument("--key-file", help="file whose bytes are the key")
    p.add_argument("--key-id", help="the keyring's key to use (default: its default)")
    p.add_argument("--gamma", type=float, default=0.5)
    p.add_argument("--router-layer", type=int, default=-1,
                   help="MoE layer of the watermark (< 0 counts from the last)")
    p.add_argument("--method", default="full", choices=["full", "cspv", "weighted", "pepi"])
    p.add_argument("--oracle", help="PEPI oracle file")
    p.add_argument("--threshold", type=float, default=4.0)
    p.add_argument("--count-repeats", action="store_true")
    p.add_argument("--sample", type=int, help="CSPV: tokens to score (default 64)")
    p.add_argument("--tokens-detail", action="store_true", help="per-token rows in the results")
    p.add_argument("--partition-size", type=int, default=256,
                   help="documents per partition (default 256)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--scheduler", help="address of a running scheduler (tcp://host:8786); "
                                           "default: a LocalCluster on this machine")
    where.add_argument("--workers", type=int, help="LocalCluster: worker processes, one thread "
                                                   "each (default: one per core)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    import epwa
    from epwa.corpus import detect_corpus

    client = None
    try:
        if args.key_id and not args.keyring:
            raise epwa.Error("--key-id names a key of a keyring: give --keyring too")
        config = epwa.WatermarkConfig(
            key_file=args.key_file, keyring=args.keyring, key_id=args.key_id, gamma=args.gamma,
            router_layer=args.router_layer)
        if args.scheduler:
            from distributed import Client
            try:
                client = Client(args.scheduler, timeout="30s")
            except (OSError, TimeoutError) as e:
                raise epwa.Error(f"--scheduler {args.scheduler}: cannot connect ({e})") from None
        s = detect_corpus(args.inputs, args.model, config, args.method, args.out_dir,
                          load=args.load, oracle=args.oracle, threshold=args.threshold,
                          count_repeats=args.count_repeats, sample=args.sample,
                          detail=args.tokens_detail, partition_size=args.partition_size,
                          client=client, workers=args.workers,
                          progress=False if args.quiet else None)
    except (epwa.Error, OSError) as e:
        sys.stderr.write(f"epwa: error: {e}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("epwa: interrupted: the same command resumes the job\n")
        return 130
    finally:
        if client is not None:
            client.close()
    if args.json:
        print(json.dumps(s))
    else:
        rate = f"{s['tokens_per_s']:,.0f} tokens/s" if s["tokens_per_s"] else "nothing to run"
        print(f"{s['documents']} documents, {s['tokens']} tokens, {s['detected']} detected "
              f"({100 * s['detected_rate']:.1f}%), {s['errors']} errors; "
              f"{s['partitions_run']} of {s['partitions']} partitions run "
              f"({s['partitions_skipped']} done before) in {s['seconds']:.1f} s, {rate}; "
              f"results in {os.path.join(args.out_dir, 'parts')}")
    # As epwa detect --jsonl: 2 when a document failed, else 0 when any is watermarked, else 1.
    return 2 if s["errors"] else 0 if s["detected"] else 1
