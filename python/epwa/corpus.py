"""Watermark detection over a corpus on a Dask cluster (docs/SCALE.md): the inputs split into
partitions, each scored by a worker into its own JSON-lines file, a manifest in the output folder
so that a re-run scores only the partitions without results, and a summary."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import secrets
import sys
import threading
import time
from typing import Any, Iterable

from . import _corpus_worker
from ._epwa import Error, Model, WatermarkConfig

FORMAT = "epwa-corpus-1"
JSONL_SUFFIXES = (".jsonl", ".ndjson")


def _expand(inputs: Iterable[str | os.PathLike]) -> list[str]:
    """Absolute paths of the input files: files as given, folders walked (sorted, hidden names
    skipped), glob patterns expanded (sorted); a path given twice is read once."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    out: list[str] = []
    for given in inputs:
        given = os.fspath(given)
        if os.path.isdir(given):
            found = []
            for root, dirs, files in os.walk(given):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                found += [os.path.join(root, f) for f in files if not f.startswith(".")]
            paths = sorted(found)
        elif os.path.exists(given):
            paths = [given]
        else:
            paths = sorted(glob.glob(given, recursive=True))
            if not paths:
                raise Error(f"input '{given}' not found")
        out += [os.path.abspath(p) for p in paths if os.path.isfile(p)]
    out = list(dict.fromkeys(out))
    if not out:
        raise Error("no input files")
    return out


def _plan_jsonl(index: int, path: str, size: int, lines: int) -> list[dict]:
    # Only the line ends are read here; the workers read their byte ranges.
    parts, start, line, count, pos = [], 0, 1, 0, 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            at = -1
            while (at := chunk.find(b"\n", at + 1)) >= 0:
                count += 1
                if count == lines:
                    end = pos + at + 1
                    parts.append({"input": index, "kind": "jsonl", "path": path, "start": start,
                                  "end": end, "first_line": line, "lines": count})
                    start, line, count = end, line + count, 0
            pos += len(chunk)
    if start < size:  # the last lines (a last line without '\n' counts too)
        n = count + (1 if not _ends_with_newline(path, size) else 0)
        parts.append({"input": index, "kind": "jsonl", "path": path, "start": start, "end": size,
                      "first_line": line, "lines": n})
    return parts


def _ends_with_newline(path: str, size: int) -> bool:
    with open(path, "rb") as f:
        f.seek(size - 1)
        return f.read(1) == b"\n"


def plan(files: list[str], partition_size: int) -> tuple[list[dict], list[dict]]:
    """(the inputs as the manifest records them, the partitions): a JSON-lines file
    (.jsonl, .ndjson) gives partitions of partition_size lines; other files are one document
    each (the file's text, its id its path), partition_size files to a partition."""
    inputs, parts, texts = [], [], []
    for i, path in enumerate(files):
        st = os.stat(path)
        kind = "jsonl" if path.endswith(JSONL_SUFFIXES) else "text"
        inputs.append({"path": path, "kind": kind, "size": st.st_size, "mtime_ns": st.st_mtime_ns})
        if kind == "jsonl":
            parts += _plan_jsonl(i, path, st.st_size, partition_size) if st.st_size else []
        else:
            texts.append({"input": i, "path": path})
    # Text files: partition_size documents to a task (listed together, each read by the worker).
    for k in range(0, len(texts), partition_size):
        parts.append({"kind": "texts", "docs": texts[k:k + partition_size]})
    return inputs, parts


def _fingerprint(key: bytes, salt: bytes) -> str:
    # The manifest tells whether a re-run uses the same key without holding the key: a slow
    # salted hash, as for stored passwords.
    return hashlib.pbkdf2_hmac("sha256", key, salt, 200_000).hex()


def _job(inputs, model, load, config: WatermarkConfig, method, oracle, threshold, count_repeats,
         sample, detail, partition_size, salt: bytes) -> dict:
    state = config.__getstate__()
    key, key_id, _mode, gamma, _delta, router_layer = state[:6]
    secrets = b"".join(len(s).to_bytes(4, "little") + s for s in state[10])  # rotate_keys
    job = {
        "inputs": inputs, "model": model, "load": load, "method": method, "oracle": oracle,
        "threshold": threshold, "count_repeats": count_repeats, "sample": sample,
        "tokens_detail": detail, "partition_size": partition_size,
        "key": {"id": key_id or None, "gamma": gamma, "router_layer": router_layer,
                "salt": salt.hex(), "fingerprint": _fingerprint(key + secrets, salt)},
    }
    # The defences change the lists and the scores: a run with other settings is another job.
    if config.context_buckets or config.min_entropy or config.rotate_keys:
        job["key"].update(context_buckets=config.context_buckets, min_entropy=config.min_entropy,
                          keys=len(state[10]) or 1)
    return job


def _differs(old: dict, new: dict) -> str | None:
    for name in new:
        if old.get(name) != new[name]:
            if name == "inputs" and len(old[name]) == len(new[name]):
                for a, b in zip(old[name], new[name]):
                    if a != b:
                        return f"input {b['path']} differs (size, time or name)"
            return "its key differs" if name == "key" else f"its {name} differs"
    return None


def _open_out_dir(out_dir: str, job: dict, parts: list[dict]) -> tuple[dict, bool]:
    """(the manifest of out_dir, whether it is new): the same job's (resumed), or one for a new
    job, written by _create once the workers have the model. Refuses a folder that holds anything
    else, so nothing is mixed or overwritten."""
    manifest = os.path.join(out_dir, "manifest.json")
    if os.path.exists(manifest):
        try:
            with open(manifest, encoding="utf-8") as f:
                old = json.load(f)
            if old.get("format") != FORMAT:
                raise ValueError
        except (OSError, ValueError):
            raise Error(f"out_dir '{out_dir}': manifest.json is not an epwa corpus manifest") \
                from None
        why = _differs(old["job"], job)
        if why:
            raise Error(f"out_dir '{out_dir}' holds another job ({why}): give another out_dir")
        return old, False
    if os.path.exists(out_dir):
        if not os.path.isdir(out_dir):
            raise Error(f"out_dir '{out_dir}' is not a folder")
        if os.listdir(out_dir):
            raise Error(f"out_dir '{out_dir}' is not empty and has no manifest: give a new or "
                        "empty folder")
    return {"format": FORMAT, "job": job,
            "partitions": [{"results": f"parts/{i:06d}.jsonl", **p}
                           for i, p in enumerate(parts)]}, True


def _create(out_dir: str, manifest: dict) -> None:
    os.makedirs(os.path.join(out_dir, "parts"), exist_ok=True)
    _write_json(os.path.join(out_dir, "manifest.json"), manifest)


def _write_json(path: str, value: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _remove_temporaries(out_dir: str) -> None:
    parts = os.path.join(out_dir, "parts")
    for name in os.listdir(parts):
        if name.startswith(".tmp-"):
            os.unlink(os.path.join(parts, name))


def _counts_of(path: str) -> dict:
    counts = {"documents": 0, "tokens": 0, "detected": 0, "errors": 0}
    with open(path, encoding="utf-8") as f:
        for line in f:
            _corpus_worker.add_counts(counts, json.loads(line))
    return counts


def _config(keyring, key_id) -> WatermarkConfig:
    if isinstance(keyring, WatermarkConfig):
        if key_id is not None:
            raise Error("key_id is for a keyring file, not a WatermarkConfig")
        return keyring
    return WatermarkConfig(keyring=keyring, key_id=key_id)  # None, None: $EPW_KEY


class _StderrBar:
    """Dask's text progress bar (distributed.diagnostics.progressbar), drawn on stderr so that
    stdout keeps the summary; run in a thread beside the loop that collects the results."""

    def __init__(self, futures, address):
        from distributed.diagnostics.progressbar import TextProgressBar

        class Bar(TextProgressBar):
            def _draw_bar(self, remaining, all, **kwargs):
                frac = (1 - remaining / all) if all else 1.0
                sys.stderr.write(f"\r[{'#' * int(40 * frac):<40}] | {int(100 * frac)}% of "
                                 f"{all} partitions")
                sys.stderr.flush()

            def _draw_stop(self, **kwargs):
                sys.stderr.write("\33[2K\r")
                sys.stderr.flush()

        self.thread = threading.Thread(target=Bar, args=(futures, address), daemon=True)
        self.thread.start()


def detect_corpus(inputs, model, keyring=None, method: str = "full", out_dir=None, *,
                  key_id: str | None = None, load: str | None = "auto", oracle=None,
                  threshold: float = 4.0, count_repeats: bool = False, sample: int | None = None,
                  detail: bool = False, partition_size: int = 256, client=None,
                  workers: int | None = None, progress: bool | None = None) -> dict:
    """Scores every document of ``inputs`` on a Dask cluster and writes the results under
    ``out_dir`` (docs/SCALE.md). Returns the summary (also written to out_dir/summary.json).

    inputs: files, folders or glob patterns; ``.jsonl``/``.ndjson`` files hold one input per line
    as `epwa detect --jsonl` reads them, any other file is one document. model: a path (or an
    epwa.Model, whose path and mode are used), loaded once per worker. keyring: a keyring file
    (with key_id, else its default key) or an epwa.WatermarkConfig; None: $EPW_KEY. client: a
    distributed.Client; None: the default client if there is one, else a LocalCluster of
    ``workers`` one-thread workers (default: one per core) made for this call.
    """
    if out_dir is None:
        raise Error("give out_dir, the folder for the results")
    out_dir = os.path.abspath(os.fspath(out_dir))
    if isinstance(model, Model):
        model, load = str(model.path), model.load_report["mode"]
    if model is None:
        raise Error("give model, the path of the model every worker loads")
    model = os.path.abspath(os.fspath(model))
    if not os.path.exists(model):
        raise Error(f"model '{model}' not found")
    oracle = None if oracle is None else os.path.abspath(os.fspath(oracle))
    if oracle is not None and not os.path.isfile(oracle):
        raise Error(f"oracle '{oracle}' not found")
    if method not in ("full", "cspv", "weighted", "pepi"):
        raise Error(f"unknown method '{method}': give full, cspv, weighted or pepi")
    if sample is not None and method != "cspv":
        raise Error("sample is for method 'cspv'")
    if not isinstance(partition_size, int) or partition_size < 1:
        raise Error(f"partition_size must be a whole number of 1 or more, got {partition_size!r}")
    config = _config(keyring, key_id)
    files = _expand(inputs)
    for f in files:
        if os.path.commonpath([f, out_dir]) == out_dir:
            raise Error(f"input '{f}' lies inside out_dir '{out_dir}'")
    if method == "cspv" and sample is None:
        sample = 64  # the command's --sample default, recorded in the manifest
    input_list, parts = plan(files, partition_size)
    manifest_path = os.path.join(out_dir, "manifest.json")
    salt = secrets.token_bytes(16)
    if os.path.exists(manifest_path):  # the same job recomputes the stored salt's fingerprint
        try:
            with open(manifest_path, encoding="utf-8") as f:
                salt = bytes.fromhex(json.load(f)["job"]["key"]["salt"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    job = _job(input_list, model, load, config, method, oracle, threshold, count_repeats, sample,
               detail, partition_size, salt)
    manifest, new = _open_out_dir(out_dir, job, parts)
    return _run(manifest, new, out_dir, job, config, client, workers, progress)


def _run(manifest, new, out_dir, job, config, client, workers, progress) -> dict:
    from distributed import Client, LocalCluster, as_completed

    if not new:
        _remove_temporaries(out_dir)  # what killed tasks of an earlier run left half-written
    totals = {"documents": 0, "tokens": 0, "detected": 0, "errors": 0}
    todo = []
    for i, p in enumerate(manifest["partitions"]):
        path = os.path.join(out_dir, p["results"])
        if not new and os.path.exists(path):
            for k, v in _counts_of(path).items():
                totals[k] += v
        else:
            todo.append((i, p, path))
    skipped = len(manifest["partitions"]) - len(todo)
    start = time.monotonic()
    run_counts = {"documents": 0, "tokens": 0, "detected": 0, "errors": 0}
    if todo:
        own = None
        if client is None:
            try:
                from distributed import default_client
                client = default_client()
            except ValueError:
                own = LocalCluster(n_workers=workers or os.cpu_count(), threads_per_worker=1,
                                   processes=True, dashboard_address=":0")
                client = Client(own)
        job_id = hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()[:16]
        name = f"epwa-detect-{job_id}"
        try:
            client.register_worker_plugin(
                _corpus_worker.DetectorPlugin(name, job["model"], job["load"], config,
                                              job["method"], job["oracle"], job["threshold"],
                                              job["count_repeats"], job["sample"],
                                              job["tokens_detail"]), name=name)
            if new:  # only now: a model that does not load leaves no folder behind
                _create(out_dir, manifest)
            futures = {client.submit(_corpus_worker.run_partition, name, p, path,
                                     key=f"{name}-{i}", pure=False): p for i, p, path in todo}
            if progress if progress is not None else sys.stderr.isatty():
                _StderrBar(list(futures), client.scheduler.address)
            for fut in as_completed(futures):
                try:
                    counts = fut.result()
                except Exception as e:  # noqa: BLE001 - one line for the user, the rest kept
                    client.cancel(list(futures))
                    raise Error(f"partition {futures[fut]['results']} failed: "
                                f"{type(e).__name__}: {e}".splitlines()[0]) from e
                for k, v in counts.items():
                    run_counts[k] += v
            _remove_temporaries(out_dir)  # those of tasks whose worker was killed in this run
        finally:
            try:
                client.unregister_worker_plugin(name)
            except Exception:  # noqa: BLE001 - the job's outcome matters more than cleanup
                pass
            if own is not None:
                client.close()
                own.close()
    if new and not todo:
        _create(out_dir, manifest)
    seconds = time.monotonic() - start
    for k, v in run_counts.items():
        totals[k] += v
    summary = {
        **totals,
        "detected_rate": totals["detected"] / totals["documents"] if totals["documents"] else 0.0,
        "partitions": len(manifest["partitions"]), "partitions_run": len(todo),
        "partitions_skipped": skipped, "seconds": round(seconds, 3),
        "tokens_per_s": round(run_counts["tokens"] / seconds, 1) if todo and seconds else None,
    }
    _write_json(os.path.join(out_dir, "summary.json"), summary)
    return summary


def results(out_dir) -> Iterable[dict]:
    """Every result line of a finished job, in input order (partition by partition)."""
    out_dir = os.fspath(out_dir)
    with open(os.path.join(out_dir, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    for p in manifest["partitions"]:
        with open(os.path.join(out_dir, p["results"]), encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)
