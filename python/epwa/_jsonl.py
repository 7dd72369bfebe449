"""Lines of `epwa detect --jsonl` in Python: an input line read as the command reads it
(src/detect/batch.cpp, tools/epwa/detect.cpp) and a result written byte for byte as the command
writes it (nlohmann::json's compact dump: sorted keys, its number format), so that a corpus job's
results are the command's."""

from __future__ import annotations

import json
import math
from typing import Any

from ._epwa import _json_dumps


class LineError(Exception):
    """A line the command answers with an error line (the message is the command's)."""


def _int(text: str):
    # nlohmann keeps integers within int64 / uint64 and parses larger ones as doubles.
    v = int(text)
    return v if -(2**63) <= v < 2**64 else float(text)


def _finite(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise ValueError("number out of range")  # nlohmann refuses it: the line is not JSON
    return v


def _no_constant(name: str):
    raise ValueError(name)  # NaN, Infinity: not JSON for nlohmann


_TYPE = {type(None): "null", dict: "object", list: "array", str: "string", bool: "boolean",
         int: "number", float: "number"}


def parse_line(raw: bytes):
    """An input line (without its '\\n') as parse_batch_line reads it: a dict, or a str (plain
    text). Raises LineError with the command's message."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError:
        if raw.startswith(b"{"):
            raise LineError("line is not a valid JSON object") from None
        # The command would tokenize the bytes; a Python str cannot hold them.
        raise LineError("line is not valid UTF-8") from None
    try:
        value = json.loads(line, parse_int=_int, parse_float=_finite, parse_constant=_no_constant)
        dumps(value).encode("utf-8")  # a lone surrogate (\ud800) is invalid for nlohmann
    except (ValueError, UnicodeEncodeError, RecursionError):
        if line.startswith("{"):
            raise LineError("line is not a valid JSON object") from None
        return line
    if not isinstance(value, dict):
        raise LineError(f"line is JSON {_TYPE[type(value)]}, not an object "
                        '(give {"text": ...} or {"tokens": [...]})')
    return value


def _type_error(want: str, value: Any) -> LineError:
    return LineError(f"[json.exception.type_error.302] type must be {want}, but is "
                     f"{_TYPE.get(type(value), 'object')}")


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise _type_error("string", value)
    return value


def _ids(value: Any) -> list[int]:
    # get<std::vector<int32_t>>: booleans and numbers convert (floats truncate, wide ints wrap).
    if not isinstance(value, list):
        raise _type_error("array", value)
    out = []
    for v in value:
        if not isinstance(v, (bool, int, float)):
            raise _type_error("number", v)
        v = int(v)
        out.append((v + 2**31) % 2**32 - 2**31)
    return out


def detect_args(obj: dict) -> tuple[Any, Any]:
    """(text or ids, prompt or prompt ids or None) of a JSON line, as batch_input takes them."""
    prompt = None
    if "prompt_tokens" in obj:
        prompt = _ids(obj["prompt_tokens"])
    elif "prompt" in obj:
        prompt = _string(obj["prompt"])
    if "tokens" in obj:
        return _ids(obj["tokens"]), prompt
    if "text" not in obj:
        raise LineError('line has neither "tokens" nor "text"')
    return _string(obj["text"]), prompt


def dumps(value: Any) -> str:
    """The compact dump nlohmann::json writes of `value` (the command's own code, through the
    extension module: numbers and escapes byte for byte)."""
    return _json_dumps(value)
