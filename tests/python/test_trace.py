"""Model.trace against `epwa trace --json`: the same float32 logits and router decisions."""

import numpy as np

from conftest import cli_json


def check_same(trace, want):
    assert trace.tokens == want["tokens"]
    assert trace.logits.dtype == np.float32
    assert trace.logits.shape == (len(want["tokens"]), len(want["logits"][0]))
    np.testing.assert_array_equal(trace.logits, np.array(want["logits"], dtype=np.float32))
    assert [layer.layer for layer in trace.router] == [layer["layer"] for layer in want["router"]]
    for got, layer in zip(trace.router, want["router"]):
        np.testing.assert_array_equal(got.logits, np.array(layer["logits"], dtype=np.float32))
        np.testing.assert_array_equal(got.topk, np.array(layer["topk"], dtype=np.int32))
        np.testing.assert_array_equal(got.weights, np.array(layer["weights"], dtype=np.float32))


def test_ids_match_cli(model):
    ids = [1, 415, 5210, 349, 264, 1486, 302, 7925, 723]
    check_same(model.trace(ids), cli_json("trace", "--tokens", ",".join(map(str, ids))))
    check_same(model.trace(np.array(ids, dtype=np.int64)), cli_json("trace", "--tokens",
                                                                     ",".join(map(str, ids))))


def test_text_matches_cli(model):
    text = "The quick brown fox jumps over the lazy dog."
    t = model.trace(text)
    check_same(t, cli_json("trace", "--text", text))
    assert len(t.router) == model.config.num_moe_layers
    assert t.router[0].topk.shape == (len(t.tokens), model.config.experts_per_token)
