"""Model loading as the CLI loads (path, $EPW_MODEL_PATH, the bundled model), config, hash,
tokenizer and the kernel pool's size."""

import json
import os
import pathlib
import warnings

import epwa
import numpy as np
import pytest

from conftest import ROOT, cli, cli_json


def test_bundled_model(model):
    assert model.path == ROOT / "models" / "epwa-tiny-moe"
    c = model.config
    assert (c.architecture, c.num_experts, c.vocab_size) == ("MixtralForCausalLM", 8, 8000)
    assert c.num_moe_layers == len(c.moe_layers) == c.num_layers
    _, out, _ = cli("hash", "--json", "-q")
    assert model.router_hash == json.loads(out)["router_hash"]
    assert model.load_report["effective"] == "stored"
    assert model.format == "safetensors"


def test_tokenizer_matches_cli(model):
    text = "Hello world, <s> and the river."
    _, out, _ = cli("tokenize", "--text", text, "--json")
    want = json.loads(out)
    ids = model.tokenizer.encode(text)
    assert ids == want["ids"]
    assert [model.tokenizer.token_to_piece(i) for i in ids] == want["pieces"]
    plain = "Hello world and the river."
    assert model.tokenizer.decode(model.tokenizer.encode(plain), skip_special=True) == plain
    assert model.tokenizer.piece_to_id(want["pieces"][1]) == want["ids"][1]


def test_gguf_and_model_path_variable(model, monkeypatch):
    gguf = pathlib.Path(os.environ.get("EPWA_BINARY", ROOT / "build" / "epwa")).parent / \
        "models" / "epwa-tiny-moe.gguf"
    if not gguf.exists():
        pytest.skip("the build's GGUF copy of the bundled model is not there")
    g = epwa.Model(gguf)
    assert g.format == "gguf" and g.router_hash == model.router_hash
    assert g.tokenizer is not None
    monkeypatch.setenv("EPW_MODEL_PATH", str(gguf))
    assert epwa.Model().path == gguf
    assert epwa.Model(ROOT / "models" / "epwa-tiny-moe").format == "safetensors"


def test_load_modes(model):
    m8 = epwa.Model(load="8bit")
    assert m8.load_report["effective"] == "8bit"
    ids = [1, 415, 5210, 349, 264]
    want = cli_json("trace", "--tokens", ",".join(map(str, ids)), load="8bit")
    np.testing.assert_array_equal(m8.trace(ids).logits, np.array(want["logits"], dtype=np.float32))
    assert not np.array_equal(model.trace(ids).logits, m8.trace(ids).logits)
    std = epwa.Model(load=None)
    assert std.load_report["mode"] == "standard"


def test_threads_is_the_process_pool(model):
    model.trace([1, 5, 9])  # the pool starts at the first kernel call
    n = int(os.environ.get("EPWA_THREADS", os.cpu_count()))
    assert epwa.Model(threads=n).router_hash == model.router_hash
    with pytest.raises(epwa.Error, match="already runs"):
        epwa.Model(threads=n + 1)


def test_load_warnings_are_python_warnings(monkeypatch):
    monkeypatch.setenv("EPW_LOAD_IN_4BIT", "maybe")
    with pytest.warns(UserWarning, match="EPW_LOAD_IN_4BIT='maybe' is not a recognised value"):
        epwa.Model()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UserWarning):
            epwa.Model()
