#!/usr/bin/env python3
"""Expected renders of the chat templates in tests/data/chat_templates/ (the reference for
tests/chat/): every template x every conversation below, rendered by Jinja2 configured exactly as
transformers' apply_chat_template configures it (ImmutableSandboxedEnvironment with trim_blocks,
lstrip_blocks and loop controls; its tojson, raise_exception and strftime_now). A render that fails
is recorded as an error (with the message when the template itself raised).

Run with Debian's Python and python3-jinja2:
    /usr/bin/python3 tools/ref/chat_template_refs.py   # writes tests/data/chat_templates/expected.json
"""
import json
import pathlib
import sys

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = pathlib.Path(__file__).resolve().parents[2]
DIR = ROOT / "tests" / "data" / "chat_templates"


class Raised(Exception):
    pass


def environment():
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(fmt):
        raise Raised("strftime_now is not deterministic: give date_string")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


# The special tokens each template's model has (tokenizer_config.json's bos/eos).
SPECIAL = {
    "mixtral-8x7b-instruct": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
    "mistral-nemo-instruct": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
    "qwen1.5-chat": {"eos_token": "<|im_end|>"},
    "qwen2.5-instruct": {"eos_token": "<|im_end|>"},
    "qwen3": {"eos_token": "<|im_end|>"},
    "tulu-olmoe-instruct": {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"},
    "deepseek-v2-chat": {"bos_token": "<｜begin▁of▁sentence｜>", "eos_token": "<｜end▁of▁sentence｜>"},
    "deepseek-v3.1": {"bos_token": "<｜begin▁of▁sentence｜>", "eos_token": "<｜end▁of▁sentence｜>"},
    "deepseek-r1": {"bos_token": "<｜begin▁of▁sentence｜>", "eos_token": "<｜end▁of▁sentence｜>"},
    "llama-3.1-instruct": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
    "hermes-3-tool-use": {"bos_token": "<|begin_of_text|>", "eos_token": "<|im_end|>"},
    "gemma-2-it": {"bos_token": "<bos>", "eos_token": "<eos>"},
    "command-r-plus-tool-use": {"bos_token": "<BOS_TOKEN>", "eos_token": "<|END_OF_TURN_TOKEN|>"},
    "functionary-v3.2": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
    "features": {"bos_token": "<s>", "eos_token": "</s>"},
}

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city; «units» optional.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name"},
                           "units": {"type": "string", "enum": ["c", "f"]}},
            "required": ["city"],
        },
    },
}


def tool_turns(arguments, content):
    return [
        {"role": "user", "content": "Weather in Zürich?"},
        {"role": "assistant", "content": content, "tool_calls": [
            {"id": "call00001", "type": "function",
             "function": {"name": "get_weather", "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": "call00001", "name": "get_weather",
         "content": "{\"temp\": 21.5}"},
        {"role": "assistant", "content": "It is 21.5 °C."},
        {"role": "user", "content": "Thanks!"},
    ]


CASES = {
    "chat": {"messages": [
        {"role": "system", "content": "You are a helpful assistant"},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi there"},
        {"role": "user", "content": "Who are you"}]},
    "chat_no_generation_prompt": {"add_generation_prompt": False, "messages": [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "   I am an assistant   "}]},
    "no_system": {"messages": [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi"},
        {"role": "user", "content": "Another question"}]},
    "unicode": {"messages": [
        {"role": "user", "content": "Grüße 🌍 — \"double\" 'single' back\\slash\nnew line\ttab  "},
        {"role": "assistant", "content": "  spaced  \n"},
        {"role": "user", "content": "最後の質問 {{ not a tag }} {% neither %}"}]},
    "reasoning": {"messages": [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "<think>\nadd them\n</think>\n\n4"},
        {"role": "user", "content": "and 3+3?"}]},
    "thinking_off": {"kwargs": {"enable_thinking": False, "thinking": False}, "messages": [
        {"role": "user", "content": "Hi"}]},
    "thinking_on": {"kwargs": {"thinking": True}, "messages": [
        {"role": "user", "content": "Hi"}]},
    "tools_dict_arguments": {"tools": [WEATHER], "messages": tool_turns({"city": "Zürich"}, None)},
    "tools_string_arguments": {"tools": [WEATHER],
                               "messages": tool_turns("{\"city\": \"Zürich\"}", "")},
    "roles_not_alternating": {"messages": [
        {"role": "user", "content": "one"}, {"role": "user", "content": "two"}]},
    "single_user": {"messages": [{"role": "user", "content": "x"}]},
}


def main():
    env = environment()
    records = []
    for path in sorted(DIR.glob("*.jinja")):
        name = path.stem
        tpl = env.from_string(path.read_text(encoding="utf-8"))
        for case, spec in CASES.items():
            kwargs = {"date_string": "26 Jul 2024", **spec.get("kwargs", {})}
            rec = {"template": name, "case": case,
                   "messages": spec["messages"], "tools": spec.get("tools"),
                   "add_generation_prompt": spec.get("add_generation_prompt", True),
                   "kwargs": kwargs, "special_tokens": SPECIAL[name]}
            try:
                rec["output"] = tpl.render(messages=spec["messages"], tools=spec.get("tools"),
                                           documents=None,
                                           add_generation_prompt=rec["add_generation_prompt"],
                                           **SPECIAL[name], **kwargs)
            except jinja2.exceptions.TemplateError as e:
                # raise_exception() raises TemplateError itself; Jinja2's own errors subclass it.
                rec["error"] = str(e)
                rec["raised"] = type(e) is jinja2.exceptions.TemplateError
            except Exception as e:  # a Python error inside the template (TypeError, ...)
                rec["error"] = f"{type(e).__name__}: {e}"
                rec["raised"] = False
            records.append(rec)
    out = DIR / "expected.json"
    out.write_text(json.dumps(records, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    ok = sum("output" in r for r in records)
    print(f"{out.relative_to(ROOT)}: {len(records)} renders ({ok} rendered, "
          f"{len(records) - ok} errors) with Jinja2 {jinja2.__version__}", file=sys.stderr)


if __name__ == "__main__":
    main()
