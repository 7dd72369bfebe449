"""Fixtures of the Python package's tests: the package from the build tree (PYTHONPATH, set by
ctest), the `epwa` command of the same build (EPWA_BINARY) to compare with, one shared model."""

import json
import os
import pathlib
import subprocess

import pytest

# The tests state every setting: no EPW_* variable of the caller's shell may change a load or a key.
for _name in [n for n in os.environ if n.startswith("EPW_")]:
    del os.environ[_name]

import epwa  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
BINARY = os.environ.get("EPWA_BINARY", str(ROOT / "build" / "epwa"))
KEY = "py-test-key"


def cli(*args, check=True):
    """Runs the epwa command; returns (exit status, stdout, stderr)."""
    p = subprocess.run([BINARY, *args], capture_output=True, text=True, timeout=300)
    if check and p.returncode not in (0, 1):
        raise AssertionError(f"epwa {' '.join(args)} failed ({p.returncode}): {p.stderr}")
    return p.returncode, p.stdout, p.stderr


def cli_json(*args, load="auto"):
    """The JSON object an `epwa ... --json` command prints, without its "load" member."""
    _, out, _ = cli(*args, "--json", "--load", load, "-q")
    j = json.loads(out)
    j.pop("load", None)
    return j


def cli_error(*args):
    """The message of a failing `epwa` command, without its "epwa: error: " prefix."""
    rc, _, err = cli(*args, "-q", check=False)
    assert rc == 2, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("epwa: error: "), err
    return line[len("epwa: error: "):]


@pytest.fixture(scope="session")
def model():
    return epwa.Model()


@pytest.fixture(scope="session")
def config():
    return epwa.WatermarkConfig(KEY)


@pytest.fixture(scope="session")
def watermarked(model, config):
    """A watermarked generation (sampled, so that it is not one repeated phrase) and its prompt."""
    prompt = "Once upon a time"
    g = model.generate(prompt, max_new_tokens=120, temperature=0.8, seed=7, watermark=config)
    return prompt, g
