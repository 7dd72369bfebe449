"""One Model and one Detector shared by several Python threads: the GIL is released while they
compute, and each call has its own context, so concurrent results equal serial ones."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import epwa


def texts(model, n):
    return [model.generate("Long ago", max_new_tokens=60, temperature=1.0, seed=s).text
            for s in range(n)]


def test_concurrent_detection_equals_serial(model, config):
    items = texts(model, 8)
    detectors = [epwa.Detector(model, config, m) for m in ("full", "weighted", "cspv", "pepi")]
    serial = [[d.detect(t, detail=True).to_dict() for t in items] for d in detectors]
    jobs = [(i, j) for i in range(len(detectors)) for j in range(len(items))] * 3
    with ThreadPoolExecutor(max_workers=6) as pool:
        got = list(pool.map(lambda ij: detectors[ij[0]].detect(items[ij[1]], detail=True)
                            .to_dict(), jobs))
    for (i, j), d in zip(jobs, got):
        assert d == serial[i][j]


def test_concurrent_generation_equals_serial(model, config):
    def run(seed):
        return model.generate("At dawn", max_new_tokens=40, temperature=1.0, seed=seed,
                              watermark=config).tokens
    serial = [run(s) for s in range(6)]
    with ThreadPoolExecutor(max_workers=3) as pool:
        assert list(pool.map(run, range(6))) == serial


def test_gil_is_released_while_detecting(model, config):
    det = epwa.Detector(model, config)
    batch = texts(model, 2)
    while True:  # a call long enough to see a held GIL, on any machine
        t0 = time.perf_counter()
        det.detect_batch(batch)
        if time.perf_counter() - t0 > 0.3:
            break
        batch *= 2
    span = {}

    def worker():
        span["start"] = time.perf_counter()
        det.detect_batch(batch)
        span["end"] = time.perf_counter()

    th = threading.Thread(target=worker)
    ticks = []
    th.start()
    while th.is_alive():
        ticks.append(time.perf_counter())
    th.join()
    # With the GIL held this thread would stand still for the whole call: one gap as long as it
    # (the call's ends count, since this thread may tick first only once the call is over).
    points = [span["start"]] + [t for t in ticks if span["start"] < t < span["end"]] + [span["end"]]
    assert len(points) > 100
    gaps = [b - a for a, b in zip(points, points[1:])]
    assert max(gaps) < (span["end"] - span["start"]) / 2
