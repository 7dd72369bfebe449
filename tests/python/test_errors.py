"""Errors: epwa.Error with the CLI's one-line message; bad arguments raise, never crash."""

import os

import epwa
import numpy as np
import pytest

from conftest import KEY, cli_error


def raises_like_cli(fn, *cli_args):
    with pytest.raises(epwa.Error) as e:
        fn()
    assert str(e.value) == cli_error(*cli_args)
    return str(e.value)


def test_error_is_a_runtime_error():
    assert issubclass(epwa.Error, RuntimeError)


def test_messages_match_cli(model, config):
    det = epwa.Detector(model, config)
    msg = raises_like_cli(lambda: det.detect([5, 99999]), "detect", "--key", KEY, "--tokens",
                          "5,99999")
    assert "outside the vocabulary of 8000" in msg
    raises_like_cli(lambda: det.detect([5, -1]), "detect", "--key", KEY, "--tokens", "5,-1")
    raises_like_cli(lambda: epwa.Detector(model, epwa.WatermarkConfig(KEY, router_layer=9)),
                    "detect", "--key", KEY, "--router-layer", "9", "--tokens", "1,5")
    raises_like_cli(lambda: epwa.Model("/nonexistent/model"), "detect", "--model",
                    "/nonexistent/model", "--key", KEY, "--tokens", "1,5")
    long = [1] + [500] * model.config.max_position_embeddings
    raises_like_cli(lambda: model.generate(long), "generate", "--prompt-tokens",
                    ",".join(map(str, long)))
    raises_like_cli(lambda: model.trace([1, 8000]), "trace", "--tokens", "1,8000")
    raises_like_cli(lambda: epwa.WatermarkConfig(key_file="/nonexistent/key"), "detect",
                    "--key-file", "/nonexistent/key", "--tokens", "1,5")


def test_library_messages(model, config):
    with pytest.raises(epwa.Error, match=r"^unknown detection method 'x' \(expected full, cspv"):
        epwa.Detector(model, config, "x")
    with pytest.raises(epwa.Error, match="^unknown watermark mode"):
        epwa.WatermarkConfig(KEY, mode="xyz")
    with pytest.raises(epwa.Error, match="^trace: no tokens$"):
        model.trace([])
    with pytest.raises(epwa.Error, match="^no tokens to test$"):
        epwa.Detector(model, config).detect([])
    with pytest.raises(epwa.Error, match="^the text is empty$"):
        epwa.Detector(model, config).detect("")
    with pytest.raises(epwa.Error):
        model.tokenizer.decode([8000])


def test_bad_values_raise(model, config):
    for kwargs in [dict(gamma=1.5), dict(gamma=0), dict(delta=-1), dict(delta=1e5),
                   dict(expert_deltas=[1.0] * 8), dict(mode="ewp", expert_deltas=[-1.0])]:
        with pytest.raises(epwa.Error):
            epwa.WatermarkConfig(KEY, **kwargs)
    with pytest.raises(epwa.Error, match="^no watermark key"):
        epwa.WatermarkConfig()
    with pytest.raises(epwa.Error, match="empty"):
        epwa.WatermarkConfig("")
    with pytest.raises(epwa.Error, match="one of key, key_file"):
        epwa.WatermarkConfig(KEY, key_file="k")
    with pytest.raises(epwa.Error, match="keyring"):
        epwa.WatermarkConfig(key_id="k1")
    # The processor checks the EWP deltas against the model's experts when generating.
    with pytest.raises(epwa.Error, match="expert"):
        model.generate("x", watermark=epwa.WatermarkConfig(KEY, mode="ewp", expert_deltas=[1.0]))
    for kwargs in [dict(temperature=-1), dict(temperature=float("nan")), dict(top_p=0),
                   dict(top_p=1.5), dict(top_k=-1), dict(max_new_tokens=-1)]:
        with pytest.raises(epwa.Error):
            model.generate("x", **kwargs)
    with pytest.raises(epwa.Error, match="sample is for method 'cspv'"):
        epwa.Detector(model, config, sample=10)
    with pytest.raises(epwa.Error, match="sample must be"):
        epwa.Detector(model, config, "cspv", sample=0)
    with pytest.raises(epwa.Error, match="oracle is for method 'pepi'"):
        epwa.Detector(model, config, oracle="x.oracle")
    with pytest.raises(epwa.Error, match="threshold"):
        epwa.Detector(model, config, threshold=float("inf"))
    with pytest.raises(epwa.Error, match="^item has neither"):
        epwa.Detector(model, config).detect_batch([{"foo": 1}])
    with pytest.raises(epwa.Error, match="threads must be from 1 to 1024"):
        epwa.Model(threads=0)
    with pytest.raises(epwa.Error, match="unknown loading mode|load"):
        epwa.Model(load="16bit")


def test_bad_types_raise(model, config):
    det = epwa.Detector(model, config)
    for bad in [3.5, None, [1.5, 2.0], [1, 2**40], [1, "a"], b"bytes", np.array([1.0, 2.0])]:
        with pytest.raises(TypeError):
            det.detect(bad)
    with pytest.raises(TypeError):
        det.detect([1, 2, 3], prompt=4)
    with pytest.raises(TypeError):
        det.detect_batch("a text, not a list")
    with pytest.raises(TypeError):
        det.detect_batch([{"text": 5}])
    with pytest.raises(TypeError):
        model.trace(np.array([1, 2**40]))
    with pytest.raises(TypeError):
        model.generate("x", seed=-1)
    with pytest.raises(TypeError):
        model.generate("x", max_new_tokens=2**40)
    with pytest.raises(TypeError):
        model.generate("x", watermark="gsg")
    with pytest.raises(TypeError):
        epwa.WatermarkConfig(5)
    with pytest.raises(TypeError):
        epwa.Detector("model", config)
    with pytest.raises(TypeError):
        model.tokenizer.decode("abc")
    # The model is still whole.
    assert det.detect(model.generate("x", max_new_tokens=12).tokens).num_tokens_scored >= 0


def test_keyring(model, config, tmp_path):
    ring = tmp_path / "keys.json"
    ring.write_text('{"default": "a", "keys": {"a": "%s", "b": "other"}}' % KEY)
    os.chmod(ring, 0o600)
    text = model.generate("Long ago", max_new_tokens=40, watermark=config).tokens
    want = epwa.Detector(model, config).detect(text).to_dict()
    by_default = epwa.WatermarkConfig(keyring=ring)
    by_id = epwa.WatermarkConfig(keyring=str(ring), key_id="a")
    assert by_id.key_id == "a" and by_default.key_id == "a"
    assert epwa.Detector(model, by_default).detect(text).to_dict() == want
    assert epwa.Detector(model, by_id).detect(text).to_dict() == want
    assert KEY not in repr(by_id)
    with pytest.raises(epwa.Error, match="has no key 'c'"):
        epwa.WatermarkConfig(keyring=ring, key_id="c")
    os.chmod(ring, 0o644)
    with pytest.raises(epwa.Error, match="keyring"):
        epwa.WatermarkConfig(keyring=ring)
