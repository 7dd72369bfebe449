"""The stealing defences from Python (docs/THREAT_MODEL.md): keyring rotation (KR-v1), context
buckets (CTX-v1) and selective bias, each the same tokens and results as the `epwa` command's."""

import os
import pickle

import epwa
import pytest

from conftest import KEY, cli_json

PROMPT = "The river"


@pytest.fixture(scope="module")
def ring(tmp_path_factory):
    path = tmp_path_factory.mktemp("ring") / "keys.json"
    path.write_text('{"default": "k0", "keys": {"k0": "zero", "k1": "one", "k2": "two", '
                    '"k3": "three"}}')
    os.chmod(path, 0o600)
    return str(path)


def test_rotation_and_buckets_match_cli(model, ring):
    cfg = epwa.WatermarkConfig(keyring=ring, rotate_keys=True, context_buckets=256)
    assert cfg.rotate_keys and cfg.key_ids == ["k0", "k1", "k2", "k3"] and cfg.key_id is None
    used = set()
    for seed in (1, 2, 3, 4, 5):
        g = model.generate(PROMPT, max_new_tokens=200, temperature=0.8, seed=seed, watermark=cfg)
        want = cli_json("generate", "--prompt", PROMPT, "-n", "200", "--temperature", "0.8",
                        "--seed", str(seed), "--watermark", "gsg", "--keyring", ring,
                        "--context-buckets", "256")
        assert g.tokens == want["tokens"]
        key = g.watermark["keyring"]["key_id"]
        assert key == want["watermark"]["keyring"]["key_id"] and g.watermark["keyring"]["keys"] == 4
        assert g.watermark["context_buckets"] == 256
        used.add(key)
        r = epwa.Detector(model, cfg).detect(g.tokens, prompt=g.prompt_tokens)
        assert r.to_dict() == cli_json("detect", "--keyring", ring, "--context-buckets", "256",
                                       "--tokens", ",".join(map(str, g.tokens)), "--prompt-tokens",
                                       ",".join(map(str, g.prompt_tokens)))
        # The key that made the text is the one that fires, with the keyring's correction.
        assert r.prediction and r.key_id == key and r.keys == 4
        assert r.p_corrected == pytest.approx(min(1.0, 4 * r.p_value), rel=1e-12)
    assert len(used) >= 2  # the rotation picks different keys for different seeds
    # Without the buckets the lists are other lists: the same text is not detected.
    plain = epwa.WatermarkConfig(keyring=ring, rotate_keys=True)
    assert not epwa.Detector(model, plain).detect(g.tokens, prompt=g.prompt_tokens).prediction


def test_selective_bias_matches_cli(model):
    cfg = epwa.WatermarkConfig(KEY, min_entropy=1.0)
    g = model.generate(PROMPT, max_new_tokens=200, temperature=0.8, seed=11, watermark=cfg)
    want = cli_json("generate", "--prompt", PROMPT, "-n", "200", "--temperature", "0.8", "--seed",
                    "11", "--watermark", "gsg", "--key", KEY, "--min-entropy", "1")
    assert g.tokens == want["tokens"] and g.watermark["min_entropy"] == 1.0
    r = epwa.Detector(model, cfg).detect(g.text, prompt=PROMPT)
    assert r.to_dict() == cli_json("detect", "--key", KEY, "--min-entropy", "1", "--prompt",
                                   PROMPT, "--text", g.text)
    # Only the steps of at least 1 nat are biased and scored: fewer than the text's tokens.
    assert r.prediction and r.num_tokens_scored < len(g.tokens)


def test_pickle_keeps_the_defences(model, ring):
    cfg = epwa.WatermarkConfig(keyring=ring, rotate_keys=True, context_buckets=64, min_entropy=0.5)
    back = pickle.loads(pickle.dumps(cfg))
    assert (back.key_ids, back.context_buckets, back.min_entropy) == (cfg.key_ids, 64, 0.5)
    g = model.generate(PROMPT, max_new_tokens=40, temperature=0.8, seed=3, watermark=cfg)
    assert model.generate(PROMPT, max_new_tokens=40, temperature=0.8, seed=3,
                          watermark=back).tokens == g.tokens
    assert (epwa.Detector(model, back).detect(g.tokens).to_dict()
            == epwa.Detector(model, cfg).detect(g.tokens).to_dict())
    assert "zero" not in repr(cfg) and "rotate_keys=4" in repr(cfg)


def test_bad_defence_settings(ring):
    with pytest.raises(epwa.Error, match="rotate_keys picks a key of a keyring"):
        epwa.WatermarkConfig(KEY, rotate_keys=True)
    with pytest.raises(epwa.Error, match="give no key_id"):
        epwa.WatermarkConfig(keyring=ring, key_id="k1", rotate_keys=True)
    with pytest.raises(epwa.Error, match="context_buckets must be 0"):
        epwa.WatermarkConfig(KEY, context_buckets=1)
    with pytest.raises(epwa.Error, match="min_entropy must be"):
        epwa.WatermarkConfig(KEY, min_entropy=-1)
