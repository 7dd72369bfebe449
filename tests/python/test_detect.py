"""Detector against `epwa detect --json`: every number the same to the bit."""

import json

import epwa
import pytest

from conftest import KEY, cli, cli_json


@pytest.mark.parametrize("method", ["full", "cspv", "weighted", "pepi"])
def test_text_matches_cli(model, config, watermarked, method):
    prompt, g = watermarked
    r = epwa.Detector(model, config, method).detect(g.text, prompt=prompt)
    want = cli_json("detect", "--key", KEY, "--method", method, "--prompt", prompt, "--text", g.text)
    assert r.to_dict() == want
    # transformers' names carry the same values (z and p compared as floats: bit for bit).
    assert r.num_tokens_scored == want["n"]
    assert r.num_green_tokens == want["g"]
    assert r.green_fraction == want["green_fraction"]
    assert r.z_score == want["z"]
    assert r.p_value == want["p_value"]
    assert r.prediction == want["detected"]


def test_watermarked_is_detected_and_plain_is_not(model, config, watermarked):
    prompt, g = watermarked
    det = epwa.Detector(model, config)
    r = det.detect(g.text, prompt=prompt)
    assert r.prediction and r.z_score > 4 and r.p_value < 1e-4
    plain = model.generate(prompt, max_new_tokens=120, temperature=0.8, seed=7)
    assert plain.tokens != g.tokens
    assert not det.detect(plain.text, prompt=prompt).prediction
    other = epwa.Detector(model, epwa.WatermarkConfig("another key"))
    assert not other.detect(g.text, prompt=prompt).prediction


def test_ids_and_prompt_ids_match_cli(model, config, watermarked):
    _, g = watermarked
    ids = ",".join(map(str, g.tokens))
    pids = ",".join(map(str, g.prompt_tokens))
    want = cli_json("detect", "--key", KEY, "--tokens", ids, "--prompt-tokens", pids)
    r = epwa.Detector(model, config).detect(g.tokens, prompt=g.prompt_tokens)
    assert r.to_dict() == want
    assert r.prompt_tokens == len(g.prompt_tokens) and r.text_tokens == len(g.tokens)
    # Without a prompt the context is BOS alone, as the CLI's.
    want = cli_json("detect", "--key", KEY, "--tokens", ids)
    assert epwa.Detector(model, config).detect(g.tokens).to_dict() == want


def test_options_match_cli(model, config, watermarked):
    prompt, g = watermarked
    det = epwa.Detector(model, config, "cspv", threshold=2.5, count_repeats=True, sample=20)
    want = cli_json("detect", "--key", KEY, "--method", "cspv", "--threshold", "2.5",
                    "--count-repeats", "--sample", "20", "--prompt", prompt, "--text", g.text)
    r = det.detect(g.text, prompt=prompt)
    assert r.to_dict() == want
    assert r.strata == {k: (v["hits"], v["n"]) for k, v in want["strata"].items()}
    assert r.num_tokens_scored == 20


def test_detail_matches_cli(model, config, watermarked):
    prompt, g = watermarked
    want = cli_json("detect", "--key", KEY, "--tokens-detail", "--prompt", prompt, "--text", g.text)
    r = epwa.Detector(model, config).detect(g.text, prompt=prompt, detail=True)
    assert r.to_dict() == want
    assert r.experts == [t["expert"] for t in want["tokens"]]
    assert [t.piece for t in r.tokens] == [t["piece"] for t in want["tokens"]]
    assert [t.green for t in r.tokens] == [t["green"] for t in want["tokens"]]
    assert sum(t.green and t.scored for t in r.tokens) == r.num_green_tokens
    plain = epwa.Detector(model, config).detect(g.text, prompt=prompt)
    assert plain.tokens is None and plain.experts is None


def test_batch_matches_cli_jsonl(model, config, watermarked, tmp_path):
    prompt, g = watermarked
    items = [
        g.text,
        g.tokens[:40],
        {"text": g.text, "prompt": prompt},
        {"tokens": g.tokens, "prompt_tokens": g.prompt_tokens, "id": "x"},
        "A plain sentence that nobody watermarked, about rivers and the sea.",
    ]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(i if isinstance(i, dict) else (
        {"tokens": i} if isinstance(i, list) else {"text": i})) + "\n" for i in items))
    _, out, _ = cli("detect", "--key", KEY, "--jsonl", str(path), "--load", "auto", "-q")
    lines = [json.loads(line) for line in out.splitlines()]
    det = epwa.Detector(model, config)
    results = det.detect_batch(items)
    assert len(results) == len(lines) == len(items)
    for r, line in zip(results, lines):
        line.pop("line")
        line.pop("id", None)
        d = r.to_dict()
        d.pop("router_hash")  # the batch lines do not repeat it
        assert d == line
    # One by one gives the same.
    assert [r.to_dict() for r in results[:2]] == [det.detect(i).to_dict() for i in items[:2]]


def test_batch_prompt_replaces_each_items(model, config, watermarked):
    prompt, g = watermarked
    det = epwa.Detector(model, config)
    [r] = det.detect_batch([{"text": g.text, "prompt": "Something else"}], prompt=prompt)
    assert r.to_dict() == det.detect(g.text, prompt=prompt).to_dict()


def test_exp_mode_matches_cli(model):
    """The distortion-free mode: the same tokens as `generate --watermark exp`, the same result
    as `detect --scheme exp`, detected, and refused at temperature 0."""
    prompt = "The river"
    cfg = epwa.WatermarkConfig(KEY, mode="exp")
    g = model.generate(prompt, max_new_tokens=120, temperature=0.8, seed=4, watermark=cfg)
    want = cli_json("generate", "--prompt", prompt, "-n", "120", "--temperature", "0.8",
                    "--seed", "4", "--watermark", "exp", "--key", KEY)
    assert g.tokens == want["tokens"]
    r = epwa.Detector(model, cfg).detect(g.text, prompt=prompt)
    assert r.to_dict() == cli_json("detect", "--key", KEY, "--scheme", "exp", "--prompt", prompt,
                                   "--text", g.text)
    assert r.prediction and r.p_value < 1e-6
    with pytest.raises(epwa.Error, match="temperature"):
        model.generate(prompt, max_new_tokens=4, watermark=cfg)
