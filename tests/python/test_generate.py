"""Model.generate against `epwa generate --json`: the same tokens and text for the same seed."""

import epwa
import pytest

from conftest import KEY, cli_json

PROMPT = "The river"


@pytest.mark.parametrize(
    "sampling",
    [
        dict(),  # greedy
        dict(temperature=0.9, seed=3),
        dict(temperature=1.2, top_p=0.9, seed=12345678901234567890),
        dict(temperature=0.7, top_k=40, seed=5),
    ],
)
@pytest.mark.parametrize("watermark", ["none", "gsg", "ewp"])
def test_matches_cli(model, sampling, watermark):
    args = ["generate", "--prompt", PROMPT, "-n", "48"]
    flags = {"temperature": "--temperature", "top_p": "--top-p", "seed": "--seed", "top_k": "--top-k"}
    for name, value in sampling.items():
        args += [flags[name], str(value)]
    wm = None
    if watermark != "none":
        args += ["--watermark", watermark, "--key", KEY, "--delta", "3"]
        extra = {}
        if watermark == "ewp":
            # 1.1 and 3.3 are not float32 numbers: both sides round them alike.
            args += ["--expert-deltas", "1.1,2,3,4,0.5,1.5,2.5,3.3"]
            extra["expert_deltas"] = [1.1, 2, 3, 4, 0.5, 1.5, 2.5, 3.3]
        wm = epwa.WatermarkConfig(KEY, mode=watermark, delta=3, **extra)
    want = cli_json(*args)
    g = model.generate(PROMPT, max_new_tokens=48, watermark=wm, **sampling)
    assert g.prompt_tokens == want["prompt_tokens"]
    assert g.tokens == want["tokens"]
    assert g.text == want["text"]
    assert g.watermark == want["watermark"]


def test_prompt_ids_match_cli(model):
    ids = model.tokenizer.encode(PROMPT, True, False)
    want = cli_json("generate", "--prompt-tokens", ",".join(map(str, ids)), "-n", "20",
                    "--temperature", "1", "--seed", "9")
    g = model.generate(ids, max_new_tokens=20, temperature=1.0, seed=9)
    assert g.tokens == want["tokens"] and g.prompt_tokens == ids


def test_seed_decides(model):
    a = model.generate(PROMPT, max_new_tokens=30, temperature=1.0, seed=1)
    b = model.generate(PROMPT, max_new_tokens=30, temperature=1.0, seed=1)
    c = model.generate(PROMPT, max_new_tokens=30, temperature=1.0, seed=2)
    assert a.tokens == b.tokens and a.tokens != c.tokens


def test_no_new_tokens(model):
    g = model.generate(PROMPT, max_new_tokens=0)
    assert g.tokens == [] and g.text == ""


def test_context_cap_warns(model):
    n = model.config.max_position_embeddings
    ids = [model.config.bos_token_id] + [500] * (n - 3)
    with pytest.warns(UserWarning, match="at most 2 new tokens"):
        g = model.generate(ids, max_new_tokens=10)
    assert len(g.tokens) <= 2


def test_min_new_tokens_matches_cli(model):
    """min_new_tokens holds EOS back as `epwa generate --min-new-tokens` does (seed 2 of this
    prompt samples EOS first)."""
    args = dict(max_new_tokens=30, temperature=1.0, seed=2)
    assert model.generate("The end.", **args).tokens == [model.config.eos_token_id]
    g = model.generate("The end.", min_new_tokens=30, **args)
    want = cli_json("generate", "--prompt", "The end.", "-n", "30", "--temperature", "1",
                    "--seed", "2", "--min-new-tokens", "30")
    assert g.tokens == want["tokens"] and len(g.tokens) == 30
    with pytest.raises(epwa.Error, match="min-new-tokens"):
        model.generate("The end.", min_new_tokens=-1)


def test_json_schema_matches_cli(model, tmp_path):
    """json_schema constrains the text as `epwa generate --json-schema` does: the same tokens,
    and JSON of the schema."""
    import json

    schema = {
        "type": "object",
        "properties": {"verse": {"type": "integer"}, "ok": {"type": "boolean"}},
        "required": ["verse", "ok"],
    }
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(schema))
    for seed in (1, 2):
        want = cli_json("generate", "--prompt", PROMPT, "-n", "120", "--temperature", "1",
                        "--seed", str(seed), "--json-schema", str(path))
        g = model.generate(PROMPT, max_new_tokens=120, temperature=1.0, seed=seed,
                           json_schema=schema)
        assert g.tokens == want["tokens"]
        value = json.loads(g.text)
        assert isinstance(value["verse"], int) and isinstance(value["ok"], bool)
        assert set(value) == {"verse", "ok"}
    with pytest.raises(epwa.Error, match="json_schema: .*allOf"):
        model.generate(PROMPT, json_schema={"allOf": []})
