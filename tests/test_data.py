"""rlhf.data: every bad input against its message, round trips, atomic writes, padding, a fuzz test."""
import json
import os
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlhf.data import (SCHEMAS, DataError, append_jsonl, read_json, read_jsonl, validate_record, write_json, write_jsonl)
from rlhf.padding import batches, pad_left, pad_right

GOOD = {
    "sft": {"prompt": "say hi", "response": "hi"},
    "preferences": {"prompt": "say hi", "chosen": "hi", "rejected": "no", "margin": 0.5},
    "prompts": {"prompt": "say hi", "id": 7, "meta": {"split": "rl"}},
    "samples": {"prompt": "say hi", "responses": ["hi", "hello"], "rewards": [0.25, -1]},
}


def write_lines(path, *lines: str | bytes):
    path.write_bytes(b"".join((ln.encode() if isinstance(ln, str) else ln) + b"\n" for ln in lines))
    return path


def pref(**kw) -> str:
    return json.dumps({**GOOD["preferences"], **kw})


@pytest.fixture
def prefs(tmp_path):
    return tmp_path / "prefs.jsonl"


# ---- error messages ------------------------------------------------------------------------

def test_missing_file(prefs):
    with pytest.raises(DataError, match=r"prefs\.jsonl: no such file$"):
        read_jsonl(prefs, "preferences")


def test_malformed_json(prefs):
    write_lines(prefs, pref(), '{"prompt": "a" "chosen": 1}')
    with pytest.raises(DataError, match=r"prefs\.jsonl:2: not valid JSON \(Expecting ',' delimiter at column 16\)"):
        read_jsonl(prefs, "preferences")


def test_missing_field(prefs):
    write_lines(prefs, pref(), pref(), json.dumps({"prompt": "p", "chosen": "c"}))
    with pytest.raises(DataError, match=r"prefs\.jsonl:3: missing field 'rejected'$"):
        read_jsonl(prefs, "preferences")


def test_wrongly_typed_field(prefs):
    write_lines(prefs, pref(chosen=3))
    with pytest.raises(DataError, match=r"prefs\.jsonl:1: field 'chosen': expected a string, got int$"):
        read_jsonl(prefs, "preferences")


@pytest.mark.parametrize("prompt", ["", "  \n "])
def test_empty_prompt(prefs, prompt):
    write_lines(prefs, pref(prompt=prompt))
    with pytest.raises(DataError, match=r"prefs\.jsonl:1: field 'prompt': empty$"):
        read_jsonl(prefs, "preferences")


def test_over_long_line(prefs):
    write_lines(prefs, pref(), pref(chosen="x" * 300))
    n = len(pref(chosen="x" * 300))
    with pytest.raises(DataError, match=rf"prefs\.jsonl:2: line is {n} bytes, over the 100-byte limit$"):
        read_jsonl(prefs, "preferences", max_line_bytes=100)
    # a line of exactly the limit is fine, with "\n" or "\r\n" after it
    write_lines(prefs, pref(chosen="é"), pref(chosen="x") + "\r")
    assert len(read_jsonl(prefs, "preferences", max_line_bytes=len(pref(chosen="é").encode()))) == 2


def test_non_utf8_bytes(prefs):
    # 0xe9 alone is latin-1, not UTF-8; it is the 16th byte of the line (1-based, like JSON's columns)
    write_lines(prefs, b'{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}')
    with pytest.raises(DataError, match=r"prefs\.jsonl:1: bytes are not valid UTF-8 \(at byte 16\)$"):
        read_jsonl(prefs, "preferences")


def test_non_object_line(prefs):
    write_lines(prefs, pref(), "[1, 2]")
    with pytest.raises(DataError, match=r"prefs\.jsonl:2: expected a JSON object, got list$"):
        read_jsonl(prefs, "preferences")


def test_bool_is_not_a_number(prefs):
    write_lines(prefs, pref(margin=True))
    with pytest.raises(DataError, match=r"prefs\.jsonl:1: field 'margin': expected a number, got bool$"):
        read_jsonl(prefs, "preferences")


@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_margin(prefs, raw):
    write_lines(prefs, '{"prompt": "p", "chosen": "a", "rejected": "b", "margin": %s}' % raw)
    with pytest.raises(DataError, match=r"prefs\.jsonl:1: field 'margin': expected a finite number, got (nan|inf|-inf)$"):
        read_jsonl(prefs, "preferences")


def test_rewards_responses_length_mismatch(tmp_path):
    f = write_lines(tmp_path / "s.jsonl", json.dumps({"prompt": "p", "responses": ["a", "b"], "rewards": [1.0]}))
    with pytest.raises(DataError, match=r"s\.jsonl:1: field 'rewards': 1 rewards for 2 responses"):
        read_jsonl(f, "samples")


def test_item_type_and_empty_list(tmp_path):
    f = write_lines(tmp_path / "s.jsonl", json.dumps({"prompt": "p", "responses": ["a", 2], "rewards": [1, 2]}))
    with pytest.raises(DataError, match=r"s\.jsonl:1: field 'responses': item 1: expected a string, got int$"):
        read_jsonl(f, "samples")
    f = write_lines(tmp_path / "s.jsonl", json.dumps({"prompt": "p", "responses": [], "rewards": []}))
    with pytest.raises(DataError, match=r"field 'responses': empty list$"):
        read_jsonl(f, "samples")


def test_empty_file(prefs):
    write_lines(prefs, "", "   ")
    with pytest.raises(DataError, match=r"prefs\.jsonl: file is empty \(no records\)$"):
        read_jsonl(prefs, "preferences")


def test_unknown_kind(prefs):
    with pytest.raises(ValueError, match="unknown data kind 'pairs'; choose from: sft, preferences, prompts, samples"):
        read_jsonl(prefs, "pairs")


def test_read_json_errors(tmp_path):
    with pytest.raises(DataError, match=r"c\.json: no such file"):
        read_json(tmp_path / "c.json")
    (tmp_path / "c.json").write_text('{"a": 1,}')
    with pytest.raises(DataError, match=r"c\.json: not valid JSON \(.*line 1 column 9"):
        read_json(tmp_path / "c.json")
    (tmp_path / "c.json").write_text("[1]")
    with pytest.raises(DataError, match=r"c\.json: expected a JSON object, got list"):
        read_json(tmp_path / "c.json")


# ---- round trips ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", list(SCHEMAS))
def test_round_trip(tmp_path, kind):
    rows = [GOOD[kind], {**GOOD[kind], "prompt": "ünïcode ✓ 日本", "extra": [1, {"x": None}]}]
    f = tmp_path / f"{kind}.jsonl"
    write_jsonl(f, rows, kind)
    assert read_jsonl(f, kind) == rows
    assert "✓" in f.read_text(encoding="utf-8")  # ensure_ascii=False
    assert f.read_bytes().count(b"\n") == 2


def test_optional_fields_may_be_absent_or_null(tmp_path):
    assert validate_record({"prompt": "p", "id": None}, "prompts", "x:1") == {"prompt": "p", "id": None}
    assert validate_record({"prompt": "p", "chosen": "a", "rejected": "b"}, "preferences", "x:1")


def test_write_json_round_trip_and_nan_as_null(tmp_path):
    write_json(tmp_path / "t.json", {"b": (1, 2), "a": float("nan"), "c": {"d": "é"}})
    text = (tmp_path / "t.json").read_text(encoding="utf-8")
    assert text.index('"a"') < text.index('"b"') and "\n  " in text  # sorted, indented
    assert read_json(tmp_path / "t.json") == {"a": None, "b": [1, 2], "c": {"d": "é"}}


# ---- atomic writes, partial tails ----------------------------------------------------------

def test_write_jsonl_is_atomic(tmp_path):
    f = tmp_path / "out.jsonl"
    write_jsonl(f, [GOOD["sft"]], "sft")
    before = f.read_bytes()

    def rows():
        yield GOOD["sft"]
        raise RuntimeError("crash mid-iteration")
    with pytest.raises(RuntimeError):
        write_jsonl(f, rows(), "sft")
    with pytest.raises(DataError, match=r"out\.jsonl:2: missing field 'response'"):
        write_jsonl(f, [GOOD["sft"], {"prompt": "p"}], "sft")
    with pytest.raises(DataError, match=r"out\.jsonl:1: cannot be written as JSON"):
        write_jsonl(f, [{"prompt": "p", "response": object()}])
    assert f.read_bytes() == before
    assert os.listdir(tmp_path) == ["out.jsonl"]  # no temp file left behind


def test_partial_tail(tmp_path):
    f = tmp_path / "out.jsonl"
    good = json.dumps(GOOD["sft"])
    f.write_bytes((good + "\n" + good[:-7]).encode())  # crash while appending the second line
    with pytest.raises(DataError, match=r"out\.jsonl:2: not valid JSON"):
        read_jsonl(f, "sft")
    with pytest.warns(UserWarning, match=r"out\.jsonl:2: dropped 1 partial final line"):
        assert read_jsonl(f, "sft", allow_partial_tail=True) == [GOOD["sft"]]
    # a bad line that does end in a newline is real damage, never dropped
    f.write_bytes((good[:-7] + "\n" + good + "\n").encode())
    with pytest.raises(DataError, match=r"out\.jsonl:1: not valid JSON"):
        read_jsonl(f, "sft", allow_partial_tail=True)
    # a resumable output may be empty
    f.write_bytes(b"")
    assert read_jsonl(f, "sft", allow_partial_tail=True) == []


def test_append_jsonl_repairs_a_partial_tail(tmp_path):
    f = tmp_path / "out.jsonl"
    append_jsonl(f, [GOOD["sft"]])
    with open(f, "ab") as fh:
        fh.write(b'{"prompt": "cut sh')  # a crash mid-append
    with pytest.warns(UserWarning, match="dropped a partial final line"):
        append_jsonl(f, [GOOD["sft"], GOOD["sft"]])
    assert read_jsonl(f, "sft") == [GOOD["sft"]] * 3
    with pytest.raises(DataError):
        append_jsonl(f, [GOOD["sft"], {"x": float}])
    assert len(read_jsonl(f, "sft")) == 3  # a bad row appends nothing


# ---- padding, batching ---------------------------------------------------------------------

def test_pad_left_and_right():
    ids, mask = pad_left([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and ids.dtype == torch.long
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]] and mask.dtype == torch.float32
    ids, mask = pad_right([[5, 6, 7], [8], []], pad_id=9)
    assert ids.tolist() == [[5, 6, 7], [8, 9, 9], [9, 9, 9]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]


def test_batches():
    assert batches(5, 2, None) == [[0, 1], [2, 3], [4]]
    assert batches(5, 2, None, drop_last=True) == [[0, 1], [2, 3]]
    a = batches(10, 3, torch.Generator().manual_seed(1))
    assert a == batches(10, 3, torch.Generator().manual_seed(1)) and sorted(sum(a, [])) == list(range(10))
    assert a != batches(10, 3, None)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        batches(3, 0, None)


# ---- fuzz: read_jsonl raises DataError and nothing else ------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**30, 10**30) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6)
keys = sorted({k for schema in SCHEMAS.values() for k in schema})
typed_dicts = st.fixed_dictionaries({}, optional={k: json_values | st.lists(json_values, max_size=3) for k in keys})
valid_ish = st.sampled_from(list(GOOD.values())).map(json.dumps)
line = st.one_of(st.binary(max_size=40), json_values.map(json.dumps), typed_dicts.map(json.dumps), valid_ish,
                 st.text(max_size=20)).map(lambda v: v if isinstance(v, bytes) else v.encode("utf-8", "surrogatepass"))


@pytest.fixture(scope="module")
def fuzz_file(tmp_path_factory):  # module scope: hypothesis reruns the test body many times within one call
    return tmp_path_factory.mktemp("fuzz") / "f.jsonl"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(line, max_size=12), newline_at_end=st.booleans(), kind=st.sampled_from(list(SCHEMAS)),
       partial=st.booleans(), limit=st.sampled_from([24, 1 << 20]))
def test_fuzz_read_jsonl_only_raises_data_error(fuzz_file, lines, newline_at_end, kind, partial, limit):
    f = fuzz_file
    f.write_bytes(b"\n".join(lines) + (b"\n" if newline_at_end and lines else b""))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            rows = read_jsonl(f, kind, max_line_bytes=limit, allow_partial_tail=partial)
        except DataError:
            return
    assert all(isinstance(r, dict) for r in rows)
