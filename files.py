"""
files.py: the project's JSON and JSONL files. Every write is atomic (temp file, fsync, rename: a crash leaves the old
file or the new one) except append_jsonl, which flushes each row to disk so an interrupted run keeps every finished
row. A missing or malformed file raises errors.BadInput naming the file (and line).
"""
import json
import os

from errors import BadInput, MissingFile


def atomic_write_text(path, text):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path, obj):
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def read_json(path):
    """The JSON value in `path`; a missing or malformed file raises one error naming it."""
    if not os.path.isfile(path):
        raise MissingFile(f"{path}: not found")
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise BadInput(f"{path}: malformed JSON ({e})") from None


def read_jsonl(path):
    """Rows of a JSONL file; a bad line raises one error naming the file and line."""
    if not os.path.isfile(path):
        raise MissingFile(f"{path}: not found")
    rows = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise BadInput(f"{path}:{i}: invalid JSON ({e.msg})") from None
    return rows


def write_jsonl(path, rows):
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def append_jsonl(path, row):
    """Append one row and flush it to disk, so an interrupted run keeps every finished row."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())
