"""JSONL data files: validated readers and atomic writers (padding and batching: rlhf/padding.py).

The four kinds of file (README, "Formats"), one JSON object a line, UTF-8:

    sft          prompt, response
    preferences  prompt, chosen, rejected (optional margin)
    prompts      prompt (optional id, meta)
    samples      prompt, responses: [str], rewards: [number] (one reward per response)

Extra fields are kept (other tools' files load as they are); an optional field that is null counts
as absent. Every problem a user can cause raises DataError naming the file, 1-based line and field.
Writes are atomic (temp file beside the target, fsync, os.replace): a crash leaves the old file or
the new one, never half of one. Strict JSON has no NaN, so writers store non-finite floats as null. sft, preferences
and prompts files may also come in the field's formats (rlhf/formats.py).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import stat
import warnings
from pathlib import Path, PurePath
from typing import Any, Callable, Iterable, Iterator

from rlhf.formats import DataFormat, FormatError, convert


class DataError(ValueError):
    """A data problem, e.g. "data/prefs.jsonl:17: field 'chosen': expected a string, got int"."""


# ---- field checks: each returns None when the value is fine, else what is wrong with it ----------

def _type_name(v: Any) -> str:
    names = {bool: "bool", int: "int", float: "float", str: "string", list: "list", dict: "object"}
    return "null" if v is None else names.get(type(v), type(v).__name__)


def _expect(ok: bool, what: str, v: Any) -> str | None:
    return None if ok else f"expected {what}, got {_type_name(v)}"


def _string(v: Any) -> str | None:
    return _expect(isinstance(v, str), "a string", v)


def _prompt(v: Any) -> str | None:
    return _string(v) or (None if v.strip() else "empty")


def _number(v: Any) -> str | None:
    # bool is an int subclass in Python, but `true` where a number belongs is a bug in the file
    err = _expect(isinstance(v, (int, float)) and not isinstance(v, bool), "a number", v)
    try:
        return err or (None if math.isfinite(v) else f"expected a finite number, got {v}")
    except OverflowError:  # an int too large to become a float
        return "number too large"


def _id(v: Any) -> str | None:
    return _expect(isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool)), "a string or an int", v)


def _object(v: Any) -> str | None:
    return _expect(isinstance(v, dict), "an object", v)


def _list_of(check: Callable[[Any], str | None], nonempty: bool) -> Callable[[Any], str | None]:
    def check_list(v: Any) -> str | None:
        if not isinstance(v, list) or (nonempty and not v):
            return _expect(False, "a list", v) if not isinstance(v, list) else "empty list"
        errs = ((i, check(item)) for i, item in enumerate(v))
        return next((f"item {i}: {err}" for i, err in errs if err), None)
    return check_list


# kind -> field -> (required, check)
SCHEMAS: dict[str, dict[str, tuple[bool, Callable[[Any], str | None]]]] = {
    "sft": {"prompt": (True, _prompt), "response": (True, _string)},
    "preferences": {"prompt": (True, _prompt), "chosen": (True, _string), "rejected": (True, _string),
                    "margin": (False, _number)},
    "prompts": {"prompt": (True, _prompt), "id": (False, _id), "meta": (False, _object)},
    "samples": {"prompt": (True, _prompt), "responses": (True, _list_of(_string, nonempty=True)),
                "rewards": (True, _list_of(_number, nonempty=False))},
}


def _schema(kind: str) -> dict:
    if kind not in SCHEMAS:
        raise ValueError(f"unknown data kind {kind!r}; choose from: {', '.join(SCHEMAS)}")
    return SCHEMAS[kind]


def validate_record(obj: Any, kind: str, where: str) -> dict:
    """Check one record against SCHEMAS[kind]; return it unchanged or raise DataError prefixed by `where`."""
    schema = _schema(kind)
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {_type_name(obj)}")
    for name, (required, check) in schema.items():
        if obj.get(name) is None and not required:
            continue
        if name not in obj:
            raise DataError(f"{where}: missing field {name!r}")
        err = check(obj[name])
        if err:
            raise DataError(f"{where}: field {name!r}: {err}")
    if kind == "samples" and len(obj["rewards"]) != len(obj["responses"]):
        raise DataError(f"{where}: field 'rewards': {len(obj['rewards'])} rewards for "
                        f"{len(obj['responses'])} responses (need one each)")
    return obj


# ---- reading ---------------------------------------------------------------------------------------

def _open_for_reading(path: Path):
    """Open a regular file for reading. A FIFO would block in open() and /dev/zero would never end: both are refused
    before opening, as a directory is."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as e:  # no permission on a parent, a name too long, ...
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    if not stat.S_ISREG(mode):
        what = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a device or another special file"
        raise DataError(f"{path}: is {what}, not a regular file")
    try:
        return open(path, "rb")
    except OSError as e:  # no permission, ...
        raise DataError(f"{path}: cannot read ({e.strerror})") from None


def _lines(path, max_line_bytes: int) -> Iterator[tuple[str, bytes, bool]]:
    """Yield ("file:line", the line's bytes without its newline, \\r or a first line's byte-order mark, whether it
    ended with a newline) for each line; a line over the byte limit is a DataError, read in bounded pieces, so one
    huge line cannot exhaust memory."""
    with _open_for_reading(Path(path)) as f:
        lineno = 0
        while True:
            raw = f.readline(max_line_bytes + 2)  # at most the limit (+2 for "\r\n")
            if not raw:
                return
            lineno += 1
            where = f"{path}:{lineno}"
            has_newline = raw.endswith(b"\n")
            body = raw[:-1] if has_newline else raw
            body = body[:-1] if body.endswith(b"\r") else body
            if len(body) > max_line_bytes:
                size = len(body)
                while not has_newline:  # count the rest of the line without keeping it
                    chunk = f.readline(1 << 20)
                    has_newline = not chunk or chunk.endswith(b"\n")
                    size += len(chunk) - chunk.endswith(b"\n")
                raise DataError(f"{where}: line is {size} bytes, over the {max_line_bytes}-byte limit")
            if lineno == 1 and body.startswith(b"\xef\xbb\xbf"):
                body = body[3:]  # a byte-order mark some editors write
            yield where, body, has_newline


def _parse_lines(path, max_line_bytes: int, allow_partial_tail: bool) -> Iterator[tuple[str, Any]]:
    """Yield ("file:line", parsed JSON value) for each non-blank line."""
    for where, body, has_newline in _lines(path, max_line_bytes):
        if not body.strip():
            continue
        try:
            yield where, json.loads(body.decode("utf-8"))
            continue
        except UnicodeDecodeError as e:
            err = f"bytes are not valid UTF-8 (at byte {e.start + 1})"
        except json.JSONDecodeError as e:
            err = f"not valid JSON ({e.msg} at column {e.colno})"
        except (ValueError, RecursionError) as e:  # an int past Python's digit limit, deep nesting
            err = f"not valid JSON ({e})"
        if allow_partial_tail and not has_newline:
            # no newline means this is the last line: an append interrupted by a crash
            warnings.warn(f"{where}: dropped 1 partial final line ({len(body)} bytes, no newline); "
                          "it was left by an interrupted write")
            return
        raise DataError(f"{where}: {err}")


def read_objects(path, max_line_bytes: int = 1 << 20, allow_partial_tail: bool = False) -> list[dict]:
    """Read a JSONL file of objects with no schema (e.g. metrics.jsonl); an empty file gives []."""
    out = []
    for where, obj in _parse_lines(path, max_line_bytes, allow_partial_tail):
        if not isinstance(obj, dict):
            raise DataError(f"{where}: expected a JSON object, got {_type_name(obj)}")
        out.append(obj)
    return out


def read_jsonl(path, kind: str, max_line_bytes: int = 1 << 20, allow_partial_tail: bool = False,
               fmt: DataFormat | None = None) -> list[dict]:
    """Read and validate a JSONL file of one of the kinds in SCHEMAS; blank lines are skipped. sft, preferences and
    prompts records may come in any format rlhf.formats reads (fmt: key names and the chat template).

    allow_partial_tail (resumable outputs): a final line with no newline that does not parse (a crash
    while appending) is dropped with a warning, and an empty file gives [] instead of an error."""
    _schema(kind)  # unknown kind: fail before touching the file
    fmt = fmt or DataFormat()

    def record(where: str, obj: Any) -> dict:
        try:  # the field's formats (HH, conversational, trl's prompt/completion, renamed keys) -> this project's record
            obj = convert(obj, kind, fmt)
        except FormatError as e:
            raise DataError(f"{where}: {e}") from None
        return validate_record(obj, kind, where)
    rows = [record(where, obj) for where, obj in _parse_lines(path, max_line_bytes, allow_partial_tail)]
    if not rows and not allow_partial_tail:
        raise DataError(f"{path}: file is empty (no records)")
    return rows


def read_text_lines(path, max_line_bytes: int = 1 << 20) -> list[tuple[str, str]]:
    """The non-blank lines of a UTF-8 text file (one prompt a line), each with its "file:line" -> [(where, text)].
    Refuses what _open_for_reading refuses (a FIFO, a device, a directory) and lines over the byte limit."""
    out = []
    for where, body, _ in _lines(path, max_line_bytes):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{where}: bytes are not valid UTF-8 (at byte {e.start + 1})") from None
        if text.strip():
            out.append((where, text))
    return out


def record_location(path, index: int, max_line_bytes: int = 1 << 20) -> str:
    """"file:line" of the index-th (0-based) record read_jsonl returned from `path`, for an error found after
    reading (blank lines are skipped there, so the record number alone could name the wrong line)."""
    for i, (where, _) in enumerate(_parse_lines(path, max_line_bytes, allow_partial_tail=True)):
        if i == index:
            return where
    return f"{path}: record {index + 1}"


def read_json(path) -> dict:
    """Read a JSON object file (config.json, meta.json); DataError naming the file on any problem."""
    with _open_for_reading(Path(path)) as f:
        raw = f.read()
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as e:  # bad UTF-8 (a ValueError too) or bad JSON
        raise DataError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a JSON object, got {_type_name(obj)}")
    return obj


# ---- writing ---------------------------------------------------------------------------------------

def _json_safe(obj: Any) -> Any:
    """Non-finite floats -> None (strict JSON has no NaN), tuples -> lists, paths -> str."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, PurePath):
        return str(obj)
    return obj


def _dumps(obj: Any, where: str, **kwargs) -> bytes:
    try:
        return json.dumps(_json_safe(obj), ensure_ascii=False, allow_nan=False, **kwargs).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as e:  # unserialisable type, lone surrogate, cycle
        raise DataError(f"{where}: cannot be written as JSON ({e})") from None


def fsync_dir(directory: Path) -> None:
    """fsync a directory so a rename in it is durable; best effort (not every OS/filesystem allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def named_os_error(e: OSError, path) -> OSError:
    """`e` naming `path` when it names no file (a failed write() does not): "[Errno 28] No space left on device: 'x'"."""
    return e if e.filename is not None else OSError(e.errno, e.strerror or str(e), str(path))


def atomic_write_bytes(path, chunks: Iterable[bytes]) -> None:
    """Write chunks to a temp file beside `path`, fsync, rename over `path`; on any failure (the
    iterator raising included; a full disk raises an OSError naming `path`) the temp file is removed and `path`
    is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # os.open with mode 0o666 honours the umask (tempfile.mkstemp would force 0o600)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise named_os_error(e, path) from e
        raise
    fsync_dir(path.parent)


def write_jsonl(path, rows: Iterable[dict], kind: str | None = None) -> None:
    """Atomically write rows as JSONL (UTF-8, one object a line); each row validated when `kind` is given."""
    if kind is not None:
        _schema(kind)

    def lines() -> Iterator[bytes]:
        for i, row in enumerate(rows):
            where = f"{path}:{i + 1}"
            if kind is not None:
                validate_record(row, kind, where)
            yield _dumps(row, where) + b"\n"
    atomic_write_bytes(path, lines())


def _drop_partial_tail(path: Path) -> None:
    """Truncate a final line with no newline (left by a crash mid-append) so appends stay whole lines."""
    with open(path, "r+b") as f:
        end = f.seek(0, os.SEEK_END)
        f.seek(max(end - 1, 0))
        if end == 0 or f.read(1) == b"\n":
            return  # the common case costs one byte of reading
        f.seek(0)
        keep = f.read().rfind(b"\n") + 1  # rare, so reading the whole file is fine
        warnings.warn(f"{path}: dropped a partial final line ({end - keep} bytes) before appending")
        f.truncate(keep)


def append_jsonl(path, rows: Iterable[dict]) -> None:
    """Append rows as whole lines, then flush and fsync (resumable outputs); a bad row appends nothing, and a
    failed write (a full disk) is cut back to the file as it was, raising an OSError that names `path`."""
    path = Path(path)
    data = b"".join(_dumps(row, f"{path}: row {i + 1}") + b"\n" for i, row in enumerate(rows))
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        _drop_partial_tail(path)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)  # unbuffered: every failure surfaces here
    try:
        size = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise named_os_error(e, path) from e
    finally:
        os.close(fd)


def write_json(path, obj: Any) -> None:
    """Atomically write one JSON value (indent 2, sorted keys); config.json, meta.json, tables."""
    atomic_write_bytes(path, [_dumps(obj, str(path), indent=2, sort_keys=True) + b"\n"])


def read_metrics(path) -> list[dict]:
    """All rows of a metrics.jsonl; a final partial line (a crash mid-write) is dropped with a warning."""
    rows = read_objects(path, allow_partial_tail=True)
    for i, r in enumerate(rows):
        if not isinstance(r.get("step"), int) or isinstance(r.get("step"), bool):
            raise DataError(f"{path}: row {i + 1} has no integer 'step'")
    return rows
