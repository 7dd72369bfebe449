#!/usr/bin/env python3
"""Turns the GPU run's output folder into the committed bundle (stdlib only).

    finish_bundle.py RUN_OUT_DIR [models/epwa-tiny-moe]
Joins model.safetensors.part-*, checks its SHA-256 against results.json, completes config.json
(architectures; top-level rope_theta for transformers 4; torch_dtype), writes generation_config.json,
tokenizer_config.json and SHA256SUMS, copies the tokenizer, tests/data/bundle_ref.json and the logs.
"""
import hashlib
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def dump(path, obj):
    path.write_text(json.dumps(obj, indent=2) + "\n")


def main():
    run = Path(sys.argv[1])
    dst = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "models/epwa-tiny-moe"
    dst.mkdir(parents=True, exist_ok=True)
    res = json.loads((run / "results.json").read_text())
    data = b"".join(p.read_bytes() for p in sorted(run.glob("model.safetensors.part-*")))
    sha = hashlib.sha256(data).hexdigest()
    if sha != res["bundle"]["sha256"]:
        sys.exit(f"finish_bundle: joined model.safetensors has sha256 {sha}, the run reported {res['bundle']['sha256']}")
    (dst / "model.safetensors").write_bytes(data)
    cfg = json.loads((run / "config.json").read_text())
    cfg["architectures"] = ["MixtralForCausalLM"]
    cfg["rope_theta"] = cfg.get("rope_parameters", {}).get("rope_theta", cfg.get("rope_theta"))
    cfg["torch_dtype"] = "bfloat16"
    dump(dst / "config.json", dict(sorted(cfg.items())))
    dump(dst / "generation_config.json", {"bos_token_id": 1, "eos_token_id": 2, "do_sample": True,
                                          "temperature": 0.8, "top_p": 0.95, "max_new_tokens": 128})
    dump(dst / "tokenizer_config.json", {"tokenizer_class": "LlamaTokenizer", "model_max_length": 1024,
                                         "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
                                         "add_bos_token": True, "add_eos_token": False, "legacy": False,
                                         "sp_model_kwargs": {}})
    shutil.copy(ROOT / "data/corpus/tokenizer/tokenizer.model", dst / "tokenizer.model")
    names = ["config.json", "generation_config.json", "model.safetensors", "tokenizer.model", "tokenizer_config.json"]
    (dst / "SHA256SUMS").write_text("".join(f"{hashlib.sha256((dst / n).read_bytes()).hexdigest()}  {n}\n"
                                            for n in names))
    shutil.copy(run / "bundle_ref.json", ROOT / "tests/data/bundle_ref.json")
    logs = ROOT / "tools/train/logs"
    logs.mkdir(parents=True, exist_ok=True)
    for src, name in (("train_log.txt", "train_log.txt"), ("results.json", "results.json"),
                      ("console.txt", "final_console.txt")):
        if (run / src).exists():
            shutil.copy(run / src, logs / name)
    total = sum((dst / n).stat().st_size for n in names)
    print(f"bundle {dst}: {total / 1e6:.2f} MB, model sha256 {sha}")


if __name__ == "__main__":
    main()
