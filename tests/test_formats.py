"""The field's data formats (rlhf/formats.py): explicit and implicit (Anthropic HH) preference pairs, conversational
turns, trl's prompt/completion, messages, renamed keys; each read into the project's records by hand-written
lines, each malformed one a line-numbered error, and two whole pipelines (SFT -> RM -> PPO -> evaluate) on them."""
import json

import pytest
import torch
from test_reliability import _err

import evaluate
import train_ppo
import train_rm
import train_sft
from rlhf.data import DataError, read_json, read_jsonl
from rlhf.formats import DataFormat


def _turn(role, content):
    return {"role": role, "content": content}


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


CASES = [  # (kind, record, DataFormat kwargs, what it reads as)
    ("preferences", {"prompt": "p", "chosen": "a", "rejected": "b", "margin": 1.0}, {},
     {"prompt": "p", "chosen": "a", "rejected": "b", "margin": 1.0}),
    ("preferences", {"chosen": "\n\nHuman: hi\n\nAssistant: Hello! Sure.", "rejected": "\n\nHuman: hi\n\nAssistant: No."}, {},
     {"prompt": "\n\nHuman: hi\n\nAssistant:", "chosen": "Hello! Sure.", "rejected": "No."}),
    ("preferences", {"chosen": "\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant: yes", "rejected": "\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant: no"}, {},
     {"prompt": "\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant:", "chosen": "yes", "rejected": "no"}),  # the LAST marker
    ("preferences", {"prompt": [_turn("system", "be brief"), _turn("user", "hi")], "chosen": [_turn("assistant", "hello")],
                     "rejected": [_turn("assistant", "go")]}, {},
     {"prompt": "system: be brief\nuser: hi", "chosen": "hello", "rejected": "go"}),
    ("preferences", {"chosen": [_turn("user", "hi"), _turn("assistant", "hello")], "rejected": [_turn("user", "hi"), _turn("assistant", "go")]},
     {"chat_template": "hh"}, {"prompt": "\n\nHuman: hi\n\nAssistant:", "chosen": "hello", "rejected": "go"}),
    ("preferences", {"input": "q", "good": "a", "bad": "b"}, {"prompt_key": "input", "chosen_key": "good", "rejected_key": "bad"},
     {"prompt": "q", "chosen": "a", "rejected": "b"}),
    ("sft", {"prompt": "p", "response": "r"}, {}, {"prompt": "p", "response": "r"}),
    ("sft", {"prompt": "p", "completion": "r", "id": 7}, {}, {"prompt": "p", "response": "r", "id": 7}),
    ("sft", {"messages": [_turn("user", "q"), _turn("assistant", "a1"), _turn("user", "more"), _turn("assistant", "a2")]}, {},
     {"prompt": "user: q\nassistant: a1\nuser: more", "response": "a2"}),
    ("sft", {"prompt": [_turn("user", "q")], "completion": [_turn("assistant", "a")]}, {"chat_template": "hh"},
     {"prompt": "\n\nHuman: q\n\nAssistant:", "response": "a"}),
    ("sft", {"question": "q", "answer": "a"}, {"prompt_key": "question", "response_key": "answer"}, {"prompt": "q", "response": "a"}),
    ("prompts", {"prompt": [_turn("user", "q")], "id": "x"}, {}, {"prompt": "user: q", "id": "x"}),
    ("prompts", {"messages": [_turn("system", "s"), _turn("user", "q")]}, {"chat_template": "hh"}, {"prompt": "s\n\nHuman: q\n\nAssistant:"}),
]


@pytest.mark.parametrize("kind, record, fmt, want", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_each_format_reads_as_the_projects_record(tmp_path, kind, record, fmt, want):
    path = _write(tmp_path / "f.jsonl", [record])
    assert read_jsonl(path, kind, fmt=DataFormat(**fmt)) == [want]


BAD = [  # (kind, record, DataFormat kwargs, the message after "file:2: ")
    ("preferences", {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: c\n\nAssistant: d"}, {},
     "fields 'chosen' and 'rejected': no 'prompt' field, and the two share no prefix ending with the assistant turn marker"),
    ("preferences", {"chosen": "x", "rejected": [_turn("assistant", "y")]}, {},
     "fields 'chosen' and 'rejected': with no 'prompt' field, both must be texts (Anthropic HH) or both lists of turns"),
    ("preferences", {"chosen": [_turn("user", "a"), _turn("assistant", "b")], "rejected": [_turn("user", "c"), _turn("assistant", "d")]}, {},
     "fields 'chosen' and 'rejected': no 'prompt' field, so the two conversations must share their first turns"),
    ("preferences", {"prompt": "p", "chosen": [_turn("assistant", "a"), _turn("assistant", "b")], "rejected": "c"}, {},
     "field 'chosen': a response given as turns must be exactly one assistant turn"),
    ("preferences", {"prompt": [_turn("bot", "hi")], "chosen": "a", "rejected": "b"}, {},
     "field 'prompt': turn 0: role 'bot'; allowed: system, user, assistant"),
    ("preferences", {"input": "q", "chosen": "a", "rejected": "b"}, {"prompt_key": "input", "rejected_key": "bad"}, "missing field 'bad'"),
    ("sft", {"messages": [_turn("user", "q")]}, {}, "field 'messages': an SFT conversation needs at least one turn before a final assistant turn"),
    ("sft", {"messages": "hello"}, {}, "field 'messages': expected a non-empty list of turns"),
    ("sft", {"prompt": "p"}, {}, "missing field 'response' (or trl's 'completion')"),
    ("sft", {"prompt": [{"role": "user"}], "completion": "a"}, {}, "field 'prompt': turn 0: expected {\"role\": ..., \"content\": text}"),
    ("prompts", {"messages": [_turn("user", "q"), _turn("assistant", "a")]}, {}, "field 'messages': a prompt's conversation must end with a user"),
    ("prompts", {"text": "q"}, {}, "missing field 'prompt' (or 'messages')"),
]


@pytest.mark.parametrize("kind, record, fmt, message", BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_a_malformed_line_of_each_format_names_its_line(tmp_path, kind, record, fmt, message):
    good = {"sft": {"prompt": "p", "response": "r"}, "preferences": {"prompt": "p", "chosen": "a", "rejected": "b"},
            "prompts": {"prompt": "p"}}[kind]
    good = {("input" if k == "prompt" and fmt.get("prompt_key") else k): v for k, v in good.items()}
    path = _write(tmp_path / "f.jsonl", [{**good, **({"bad": "b"} if fmt.get("rejected_key") == "bad" else {})}, record])
    with pytest.raises(DataError) as e:
        read_jsonl(path, kind, fmt=DataFormat(**fmt))
    assert str(e.value).startswith(f"{path}:2: {message}"), str(e.value)


@pytest.fixture
def _one_thread():
    n = torch.get_num_threads()
    yield ["--threads", "1"]
    torch.set_num_threads(n)


@pytest.mark.parametrize("template", ["plain", "hh"])
def test_sft_rm_ppo_evaluate_on_the_fields_formats(algo, tmp_path, template, _one_thread):
    """plain: SFT as messages, pairs as conversational turns with an explicit prompt, prompts as turns.
    hh: SFT as trl prompt/completion in HH text, pairs in Anthropic HH's implicit-prompt form, prompts as turns
    rendered by --chat-template hh. No meta.json: no gold judge, the RM-based figures only."""
    src = algo / "data"
    sft = [json.loads(x) for x in (src / "sft.jsonl").read_text().splitlines()][:600]
    prefs = [json.loads(x) for x in (src / "preferences.jsonl").read_text().splitlines()][:400]
    prompts = [json.loads(x)["prompt"] for x in (src / "prompts_rl.jsonl").read_text().splitlines()][:32]
    d = tmp_path / "data"
    d.mkdir()
    hh = lambda p: f"\n\nHuman: {p}\n\nAssistant:"  # noqa: E731
    if template == "plain":
        _write(d / "sft.jsonl", [{"messages": [_turn("user", r["prompt"]), _turn("assistant", r["response"])]} for r in sft])
        _write(d / "preferences.jsonl", [{"prompt": [_turn("user", r["prompt"])], "chosen": [_turn("assistant", r["chosen"])],
                                          "rejected": [_turn("assistant", r["rejected"])]} for r in prefs if r["chosen"] != r["rejected"]])
    else:
        _write(d / "sft.jsonl", [{"prompt": hh(r["prompt"]), "completion": r["response"]} for r in sft])
        _write(d / "preferences.jsonl", [{"chosen": hh(r["prompt"]) + " " + r["chosen"], "rejected": hh(r["prompt"]) + " " + r["rejected"]}
                                         for r in prefs if r["chosen"] != r["rejected"]])
    for name in ("prompts_rl.jsonl", "prompts_eval.jsonl"):
        _write(d / name, [{"prompt": [_turn("user", p)]} for p in prompts])
    fmt = ["--chat-template", template, *_one_thread]
    train_sft.main(["--preset", "smoke", "--data", str(d), "--out", str(tmp_path / "sft"), "--steps", "30", "--n-eval", "4", *fmt])
    train_rm.main(["--preset", "smoke", "--data", str(d), "--sft", str(tmp_path / "sft" / "ckpt"), "--epochs", "0.2",
                   "--n-policy-pairs", "0", "--out", str(tmp_path / "rm"), *fmt])
    train_ppo.main(["--preset", "smoke", "--data", str(d), "--sft", str(tmp_path / "sft" / "ckpt"), "--rm", str(tmp_path / "rm" / "ckpt"),
                    "--steps", "2", "--eval-every", "2", "--n-eval", "4", "--out", str(tmp_path / "ppo"), *fmt])
    evaluate.main(["--policy", str(tmp_path / "ppo" / "ckpt"), "--reference", str(tmp_path / "sft" / "ckpt"), "--rm",
                   str(tmp_path / "rm" / "ckpt"), "--data", str(d), "--n-eval", "4", "--max-new-tokens", "8",
                   "--out", str(tmp_path / "e.json"), *fmt])
    samples = [json.loads(x) for x in (tmp_path / "sft" / "samples.jsonl").read_text().splitlines()]
    assert samples[0]["prompt"] == (f"user: {prompts[0]}" if template == "plain" else hh(prompts[0]))  # what the policy saw
    diag = read_json(tmp_path / "rm" / "diagnostics.json")
    assert diag["rm/n_pairs"] > 0 and 0 <= diag["rm/accuracy"] <= 1 and "rm/gold_accuracy" not in diag
    report = read_json(tmp_path / "e.json")
    assert report["eval/n"] == 4 and "proxy/score" in report and "gold/score" not in report
    # the same conversational prompts read with the other template are other prompts: not the run's
    other = "hh" if template == "plain" else "plain"
    msg = _err(train_ppo.main, ["--preset", "smoke", "--data", str(d), "--sft", str(tmp_path / "sft" / "ckpt"), "--rm",
                                str(tmp_path / "rm" / "ckpt"), "--out", str(tmp_path / "ppo"), "--resume", "--chat-template", other])
    assert f"--chat-template {other!r} (the run has {template!r})" in msg
