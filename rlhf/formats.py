"""The field's SFT, preference and prompt formats, read into this project's records (rlhf.data.read_jsonl calls
`convert` on every line of an sft, preferences or prompts file; the README's own-data page shows each format).

    preferences  {"prompt", "chosen", "rejected"}                          explicit prompt (the project's own)
                 {"chosen": "\n\nHuman: ...\n\nAssistant: ...", "rejected"}  implicit prompt, Anthropic HH: the prompt
                     is the longest common prefix of chosen and rejected that ends with the last "\n\nAssistant:" in
                     it; each response is the rest, its leading spaces removed
                 {"prompt": [turns], "chosen": [turns], "rejected": [turns]}  conversational, explicit prompt
                 {"chosen": [turns], "rejected": [turns]}                   conversational, implicit: the prompt is the
                     turns both share; after them each side must hold exactly one assistant turn
    sft          {"prompt", "response"} | {"prompt", "completion"} (trl) | {"messages": [turns]} (the last turn, an
                 assistant's, is the response); a prompt may be a list of turns, a completion one assistant turn
    prompts      {"prompt": text or [turns]} | {"messages": [turns]}

A turn is {"role": "system" | "user" | "assistant", "content": text}. Turns before the response become the prompt
text through one chat template (DataFormat.chat_template):
    plain (this project's)  one line a turn, "role: content", joined by "\n"; the tokenizer's separator after the
                            prompt (rlhf/tokenizer.py) marks where the answer starts
    hh (Anthropic HH, for GPT-2 imports)  system text first, then "\n\nHuman: content" / "\n\nAssistant: content"
                            a turn, ending with the cue "\n\nAssistant:"
The key flags (--prompt-key, --response-key, --chosen-key, --rejected-key, OpenRLHF's names) read other field names.
Every problem is a DataError naming the file, line and field.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

ROLES = ("system", "user", "assistant")
TEMPLATES = ("plain", "hh")
HH_ASSISTANT = "\n\nAssistant:"


@dataclass(frozen=True)
class DataFormat:
    prompt_key: str = "prompt"
    response_key: str | None = None  # None: "response", or trl's "completion"
    chosen_key: str = "chosen"
    rejected_key: str = "rejected"
    chat_template: str = "plain"


def data_format(args) -> DataFormat:
    """The DataFormat of a script's DataArgs flags (rlhf.config: the same names), or the default without them."""
    return DataFormat(**{f.name: getattr(args, f.name) for f in fields(DataFormat) if hasattr(args, f.name)})


class FormatError(ValueError):
    """A record that no format reads; rlhf.data turns it into a DataError with the file and line."""


def _turns(v: Any, field: str) -> list[dict]:
    if not isinstance(v, list) or not v:
        raise FormatError(f"field {field!r}: expected a non-empty list of turns")
    for i, t in enumerate(v):
        if not isinstance(t, dict) or not isinstance(t.get("content"), str):
            raise FormatError(f"field {field!r}: turn {i}: expected {{\"role\": ..., \"content\": text}}")
        if t.get("role") not in ROLES:
            raise FormatError(f"field {field!r}: turn {i}: role {t.get('role')!r}; allowed: {', '.join(ROLES)}")
    return v


def render(turns: list[dict], template: str) -> str:
    """The prompt text of a list of turns under a chat template (see the module docstring)."""
    if template == "plain":
        return "\n".join(f"{t['role']}: {t['content']}" for t in turns)
    if template == "hh":
        system = "\n".join(t["content"] for t in turns if t["role"] == "system")
        body = "".join(f"\n\n{'Human' if t['role'] == 'user' else 'Assistant'}: {t['content']}" for t in turns if t["role"] != "system")
        return system + body + HH_ASSISTANT
    raise ValueError(f"unknown chat template {template!r}; choose from: {', '.join(TEMPLATES)}")


def _prompt_text(v: Any, field: str, fmt: DataFormat) -> Any:
    """A prompt given as text stays as it is (the schema checks it); a list of turns is rendered."""
    return render(_turns(v, field), fmt.chat_template) if isinstance(v, list) else v


def _answer(v: Any, field: str) -> Any:
    """A response given as text stays as it is; as a list, it must be one assistant turn."""
    if not isinstance(v, list):
        return v
    turns = _turns(v, field)
    if len(turns) != 1 or turns[0]["role"] != "assistant":
        raise FormatError(f"field {field!r}: a response given as turns must be exactly one assistant turn")
    return turns[0]["content"]


def split_hh(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Implicit-prompt pair -> (prompt, chosen response, rejected response): the prompt is the longest common prefix
    of the two that ends with the last "\n\nAssistant:" inside it (that marker included)."""
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    cut = chosen.rfind(HH_ASSISTANT, 0, n)
    if cut < 0 or cut + len(HH_ASSISTANT) > n:
        raise FormatError("fields 'chosen' and 'rejected': no 'prompt' field, and the two share no prefix ending with "
                          "the assistant turn marker '\\n\\nAssistant:' (an implicit-prompt pair, as Anthropic HH writes "
                          "them, needs one)")
    end = cut + len(HH_ASSISTANT)
    return chosen[:end], chosen[end:].lstrip(" "), rejected[end:].lstrip(" ")


def _split_turns(chosen: list[dict], rejected: list[dict], fmt: DataFormat) -> tuple[str, str, str]:
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    c, r = chosen[n:], rejected[n:]
    if n == 0 or len(c) != 1 or len(r) != 1 or c[0]["role"] != "assistant" or r[0]["role"] != "assistant":
        raise FormatError("fields 'chosen' and 'rejected': no 'prompt' field, so the two conversations must share their "
                          "first turns (the prompt) and then differ in exactly one assistant turn each")
    return render(chosen[:n], fmt.chat_template), c[0]["content"], r[0]["content"]


def convert(obj: Any, kind: str, fmt: DataFormat) -> Any:
    """One JSON value of an sft, preferences or prompts file -> the project's record of that kind (a record already
    in the project's form is returned as it is). Raises FormatError; anything else is left to the schema check."""
    if not isinstance(obj, dict) or kind not in ("sft", "preferences", "prompts"):
        return obj
    read = {fmt.prompt_key, fmt.chosen_key, fmt.rejected_key, fmt.response_key, "messages", "response", "completion"}
    extra = {k: v for k, v in obj.items() if k not in read}  # other fields (margin, id, meta, your own) are kept
    if kind == "preferences":
        for key in (fmt.chosen_key, fmt.rejected_key):
            if key not in obj:
                raise FormatError(f"missing field {key!r}")
        chosen, rejected = obj[fmt.chosen_key], obj[fmt.rejected_key]
        if fmt.prompt_key in obj:
            return {"prompt": _prompt_text(obj[fmt.prompt_key], fmt.prompt_key, fmt), "chosen": _answer(chosen, fmt.chosen_key),
                    "rejected": _answer(rejected, fmt.rejected_key), **extra}
        if isinstance(chosen, str) and isinstance(rejected, str):
            p, c, r = split_hh(chosen, rejected)
        elif isinstance(chosen, list) and isinstance(rejected, list):
            p, c, r = _split_turns(_turns(chosen, fmt.chosen_key), _turns(rejected, fmt.rejected_key), fmt)
        else:
            raise FormatError(f"fields {fmt.chosen_key!r} and {fmt.rejected_key!r}: with no {fmt.prompt_key!r} field, both "
                              "must be texts (Anthropic HH) or both lists of turns")
        return {"prompt": p, "chosen": c, "rejected": r, **extra}
    if fmt.prompt_key not in obj and "messages" in obj:
        turns = _turns(obj["messages"], "messages")
        if kind == "prompts":
            if turns[-1]["role"] == "assistant":
                raise FormatError("field 'messages': a prompt's conversation must end with a user (or system) turn")
            return {"prompt": render(turns, fmt.chat_template), **extra}
        if len(turns) < 2 or turns[-1]["role"] != "assistant":
            raise FormatError("field 'messages': an SFT conversation needs at least one turn before a final assistant turn")
        return {"prompt": render(turns[:-1], fmt.chat_template), "response": turns[-1]["content"], **extra}
    if fmt.prompt_key not in obj:
        raise FormatError(f"missing field {fmt.prompt_key!r}" + (" (or 'messages')" if kind != "preferences" else ""))
    prompt = _prompt_text(obj[fmt.prompt_key], fmt.prompt_key, fmt)
    if kind == "prompts":
        return {"prompt": prompt, **extra}
    keys = [fmt.response_key] if fmt.response_key else ["response", "completion"]
    key = next((k for k in keys if k in obj), None)
    if key is None:
        raise FormatError(f"missing field {keys[0]!r}" + ("" if fmt.response_key else " (or trl's 'completion')"))
    return {"prompt": prompt, "response": _answer(obj[key], key), **extra}
