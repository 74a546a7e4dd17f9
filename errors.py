"""
errors.py: the one exception type for bad input. Whatever the project reads (a checkpoint, a config.json, a JSONL
file, a tensor's shape, a command-line value) and finds wrong raises BadInput with a message that starts with the
thing at fault, e.g. "runs/lock/config.json: malformed JSON (...)". common.run_cli prints such an error as one line,
`error: <message>`, and exits with code 1, without a traceback; a bug elsewhere still gives its full traceback.
"""


class BadInput(ValueError):
    """Bad input: a file, field, value or tensor that is wrong. The message names it first."""


class MissingFile(BadInput, FileNotFoundError):
    """A file or directory that should be there is not."""
