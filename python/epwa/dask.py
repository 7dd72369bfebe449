"""Watermark detection over Dask collections (docs/PYTHON.md, "Dask").

Each worker process loads the model and makes the detector once, on its first partition, and keeps
them for the next ones; the threads of one process share them (the GIL is released while they
compute). The results are those of ``Detector.detect_batch`` on the same items, as plain dicts
(``DetectionResult.to_dict()``) or as columns of a dataframe.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from ._epwa import Detector, Model, WatermarkConfig

# Per process: (model path, load mode) -> Model, and (model, config, detector options) -> Detector.
_models: dict[tuple, Model] = {}
_detectors: dict[tuple, Detector] = {}
_lock = threading.Lock()

# The scalar fields of a result, as the columns of detect_series' dataframe.
COLUMNS = [
    "num_tokens_scored", "num_green_tokens", "green_fraction", "z_score", "p_value", "prediction",
    "log10_p", "plain_z", "reason", "method", "prompt_tokens", "text_tokens",
]


def _model_spec(model: Model | str | os.PathLike | None, load: str | None) -> tuple:
    if isinstance(model, Model):
        # The loaded model's file and mode, so that every worker loads what the caller has.
        return (str(model.path), model.load_report["mode"])
    return (None if model is None else os.fspath(model), load)


def _detector(spec: tuple, config: WatermarkConfig, options: tuple) -> Detector:
    key = (spec, tuple(tuple(x) if isinstance(x, list) else x for x in config.__getstate__()),
           options)
    with _lock:
        det = _detectors.get(key)
        if det is None:
            model = _models.get(spec)
            if model is None:
                model = _models[spec] = Model(spec[0], spec[1])
            method, oracle, threshold, count_repeats, sample = options
            det = _detectors[key] = Detector(model, config, method, oracle, threshold=threshold,
                                             count_repeats=count_repeats, sample=sample)
        return det


def _options(method, oracle, threshold, count_repeats, sample) -> tuple:
    return (method, None if oracle is None else os.fspath(oracle), threshold, count_repeats, sample)


def _detect_items(items, spec, config, options, prompt, detail) -> list[dict[str, Any]]:
    det = _detector(spec, config, options)
    return [r.to_dict() for r in det.detect_batch(list(items), prompt=prompt, detail=detail)]


def detect_bag(texts, config: WatermarkConfig, *, model=None, load: str | None = "auto",
               method: str = "full", oracle=None, prompt=None, detail: bool = False,
               threshold: float = 4.0, count_repeats: bool = False, sample: int | None = None):
    """A dask.bag.Bag of result dicts, one per item of ``texts`` (a Bag of what
    ``Detector.detect_batch`` takes: str, ids, or dicts as lines of ``epwa detect --jsonl``).

    ``model``: an ``epwa.Model`` (its path and loading mode are reloaded on the workers), a path,
    or None (``$EPW_MODEL_PATH``, else the bundled model, on each worker). The config is pickled
    to the workers with its key: use schedulers whose workers you trust.
    """
    spec = _model_spec(model, load)
    options = _options(method, oracle, threshold, count_repeats, sample)
    return texts.map_partitions(_detect_items, spec, config, options, prompt, detail)


def _detect_frame(part, spec, config, options, prompt):
    import pandas as pd

    rows = _detect_items(part.tolist(), spec, config, options, prompt, False)
    names = {"num_tokens_scored": "n", "num_green_tokens": "g", "z_score": "z",
             "prediction": "detected"}
    data = {c: [r.get(names.get(c, c)) for r in rows] for c in COLUMNS}
    return pd.DataFrame(data, index=part.index, columns=COLUMNS).astype(_dtypes())


def _dtypes() -> dict[str, str]:
    types = {c: "float64" for c in COLUMNS}
    types.update(num_tokens_scored="int64", num_green_tokens="int64", prediction="bool",
                 reason="object", method="object", prompt_tokens="int64", text_tokens="int64")
    return types


def detect_series(texts, config: WatermarkConfig, *, model=None, load: str | None = "auto",
                  method: str = "full", oracle=None, prompt=None, threshold: float = 4.0,
                  count_repeats: bool = False, sample: int | None = None):
    """A dask.dataframe.DataFrame with one row per item of the Series ``texts`` (same index) and
    the columns ``COLUMNS``: transformers' names first, then the rest of ``epwa detect --json``'s
    scalars (a null z or green fraction is NaN). Arguments as for ``detect_bag``."""
    import pandas as pd

    spec = _model_spec(model, load)
    options = _options(method, oracle, threshold, count_repeats, sample)
    meta = pd.DataFrame({c: pd.Series(dtype=t) for c, t in _dtypes().items()}, columns=COLUMNS)
    return texts.map_partitions(_detect_frame, spec, config, options, prompt, meta=meta)


def detect_corpus(*args, **kwargs):
    """epwa.corpus.detect_corpus (docs/SCALE.md): a corpus of files scored on a distributed
    cluster, results per partition, resumable."""
    from .corpus import detect_corpus as run

    return run(*args, **kwargs)


if __name__ == "__main__":  # python3 -m epwa.dask
    import sys

    from epwa._corpus_cli import main

    sys.exit(main())
