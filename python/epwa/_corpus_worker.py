"""The worker side of a corpus job (epwa.corpus): a WorkerPlugin that loads the model and makes
the detector once per worker process, and the task that scores one partition into its results
file."""

from __future__ import annotations

import gc
import os
import tempfile

from distributed import WorkerPlugin, get_worker

from . import _jsonl
from ._epwa import Detector, Error, Model, WatermarkConfig


class DetectorPlugin(WorkerPlugin):
    """Loads the model on every worker of the cluster, the workers a nanny restarts included (the
    scheduler sends registered plugins to each worker that joins)."""

    def __init__(self, name: str, model: str, load: str | None, config: WatermarkConfig,
                 method: str, oracle: str | None, threshold: float, count_repeats: bool,
                 sample: int | None, detail: bool):
        self.name = name
        self.args = (model, load, config, method, oracle, threshold, count_repeats, sample)
        self.detail = detail
        self.detector: Detector | None = None

    def setup(self, worker):
        model, load, config, method, oracle, threshold, count_repeats, sample = self.args
        # Keep a GGUF's weights in its file mapping (not copied to huge pages), so that the
        # worker processes of one host share one copy in the page cache.
        os.environ.setdefault("EPWA_HUGE_WEIGHTS", "0")
        # One kernel thread per Dask thread: N one-thread workers on N cores do not oversubscribe.
        threads = None if "EPWA_THREADS" in os.environ else worker.state.nthreads
        m = Model(model, load, threads=threads)
        self.detector = Detector(m, config, method, oracle, threshold=threshold,
                                 count_repeats=count_repeats, sample=sample)

    def teardown(self, worker):
        # The job is over: free the model now. A reference cycle (not traced) held it
        # (seen: each finished job's mapping kept until a collection), so collect.
        self.detector = None
        gc.collect()


def _score(det: Detector, item, detail: bool) -> dict:
    try:
        if isinstance(item, _jsonl.LineError):
            raise item
        text, prompt = _jsonl.detect_args(item) if isinstance(item, dict) else (item, None)
        r = det.detect(text, prompt=prompt, detail=detail).to_dict()
        del r["router_hash"]  # the command's batch lines do not repeat it
        return r
    except (_jsonl.LineError, Error, TypeError, ValueError, OverflowError) as e:
        return {"error": str(e)}


def _items(part: dict):
    """(line number, input, the dict that may hold its "id") of each input of a partition: the
    lines of a JSON-lines file's byte range, or text files, each one document."""
    if part["kind"] == "texts":
        for doc in part["docs"]:
            with open(doc["path"], "rb") as f:
                raw = f.read()
            try:
                item = {"id": doc["path"], "text": raw.decode("utf-8")}
            except UnicodeDecodeError:
                item = _jsonl.LineError("the file is not valid UTF-8")
            yield 1, item, {"id": doc["path"]}
        return
    with open(part["path"], "rb") as f:
        f.seek(part["start"])
        data = f.read(part["end"] - part["start"])
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for i, raw in enumerate(lines):
        try:
            item = _jsonl.parse_line(raw)
        except _jsonl.LineError as e:
            item = e
        yield part["first_line"] + i, item, item if isinstance(item, dict) else {}


def run_partition(plugin_name: str, part: dict, out_path: str) -> dict:
    """Scores one partition and writes its results file whole (a temporary file renamed), so a
    results file that exists is complete, and a partition run twice (its worker killed) writes
    the same file again. Returns its counts."""
    plugin = get_worker().plugins[plugin_name]
    det, detail = plugin.detector, plugin.detail
    counts = {"documents": 0, "tokens": 0, "detected": 0, "errors": 0}
    out = []
    for line, item, ids in _items(part):
        j = _score(det, item, detail)
        j["line"] = line
        if "id" in ids:
            j["id"] = ids["id"]
        add_counts(counts, j)
        out.append(_jsonl.dumps(j) + "\n")
    d = os.path.dirname(out_path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=d)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write("".join(out))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out_path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return counts


def add_counts(counts: dict, j: dict) -> None:
    counts["documents"] += 1
    if "error" in j:
        counts["errors"] += 1
    else:
        counts["tokens"] += j["text_tokens"]
        counts["detected"] += bool(j["detected"])
