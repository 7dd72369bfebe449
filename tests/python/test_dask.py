"""epwa.dask: detection over Dask bags and series equals Detector.detect_batch on the same items,
with every scheduler (the processes one pickles the config to fresh interpreters)."""

import pickle

import epwa
import pytest

dask = pytest.importorskip("dask")
import dask.bag as db  # noqa: E402
import epwa.dask as ed  # noqa: E402

from conftest import KEY  # noqa: E402


@pytest.fixture(scope="module")
def items(model, config, watermarked):
    prompt, g = watermarked
    plain = [model.generate("Long ago", max_new_tokens=50, temperature=1.0, seed=s) for s in range(5)]
    return [g.text, g.tokens, {"text": g.text, "prompt": prompt}, "short"] + [p.text for p in plain]


def test_config_pickles_with_its_key(model, config, watermarked):
    _, g = watermarked
    copy = pickle.loads(pickle.dumps(config))
    assert repr(copy) == repr(config)
    want = epwa.Detector(model, config).detect(g.text).to_dict()
    assert epwa.Detector(model, copy).detect(g.text).to_dict() == want
    ewp = epwa.WatermarkConfig(KEY, mode="ewp", expert_deltas=[1.1] * 8)
    assert pickle.loads(pickle.dumps(ewp)).expert_deltas == ewp.expert_deltas
    # An unpickled config is checked as a new one.
    fresh = epwa.WatermarkConfig.__new__(epwa.WatermarkConfig)
    with pytest.raises(epwa.Error, match="gamma"):
        fresh.__setstate__((b"k", "", "gsg", 1.5, 2.0, -1, []))


@pytest.mark.parametrize("scheduler", ["sync", "threads", "processes"])
def test_bag_equals_detect_batch(model, config, items, scheduler):
    want = [r.to_dict() for r in epwa.Detector(model, config).detect_batch(items)]
    bag = db.from_sequence(items, npartitions=3)
    assert ed.detect_bag(bag, config).compute(scheduler=scheduler) == want
    assert ed.detect_bag(bag, config, model=model).compute(scheduler=scheduler) == want


def test_bag_options(model, config, items, watermarked):
    prompt, _ = watermarked
    det = epwa.Detector(model, config, "cspv", threshold=3.0, sample=16)
    want = [r.to_dict() for r in det.detect_batch(items, prompt=prompt, detail=True)]
    bag = db.from_sequence(items, npartitions=2)
    got = ed.detect_bag(bag, config, model=model.path, method="cspv", threshold=3.0, sample=16,
                        prompt=prompt, detail=True).compute(scheduler="threads")
    assert got == want and "tokens" in got[0]


def test_series_gives_columns(model, config, items):
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    texts = [i for i in items if isinstance(i, str)]
    series = pd.Series(texts, index=[10 * i for i in range(len(texts))])
    frame = ed.detect_series(dd.from_pandas(series, npartitions=2), config).compute(
        scheduler="threads")
    assert list(frame.index) == list(series.index)
    assert list(frame.columns) == ed.COLUMNS
    for row, r in zip(frame.itertuples(), epwa.Detector(model, config).detect_batch(texts)):
        assert row.z_score == r.z_score and row.p_value == r.p_value
        assert row.prediction == r.prediction
        assert (row.num_tokens_scored, row.num_green_tokens) == (r.num_tokens_scored,
                                                                 r.num_green_tokens)
    assert frame["prediction"].sum() == 1  # only the watermarked text
