"""Check the local files a command names before it does anything else (no network, no model load).

A missing, unreadable or malformed file is exit 2 with one line, even when the server is down
(docs/api.md "CLI exit codes"). The core later says what a readable file *contains* that is wrong.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from netshrink.compression.errors import not_a_model

# argparse dest -> how the user wrote it; JSON files are parsed here too.
FILE_ARGS = {
    "model": "MODEL",
    "architecture": "--architecture",
    "calibration": "--calibration",
    "spec": "--spec",
    "train": "--train",
    "validation": "--validation",
}
JSON_ARGS = frozenset({"architecture", "spec"})


class InputFileError(Exception):
    """A file named on the command line cannot be used; the message is the one line to print."""


def check_file(flag: str, value: str | Path, *, json_file: bool = False) -> None:
    """Raise ``InputFileError`` unless ``value`` is a readable regular file (valid JSON if asked)."""
    path = Path(value)
    if not path.exists():
        raise InputFileError(f"{flag}: no such file: {path}")
    if path.is_dir():
        raise InputFileError(f"{flag}: {path} is a directory; expected a file")
    try:  # a model is only sniffed (its head): the loader reads it once, later (peak memory)
        with open(path, "rb") as fh:
            data = fh.read() if json_file else fh.read(16)
    except OSError as exc:
        raise InputFileError(f"{flag}: cannot read {path}: {exc.strerror or exc}") from None
    if not data:  # a model gets the core's sentence, which the server also sends for an empty upload
        raise InputFileError(
            f"{flag}: {path}: {not_a_model(data, 0)}" if flag == "MODEL" else f"{flag}: {path} is empty"
        )
    if json_file:
        try:
            json.loads(data.decode("utf-8"))
        except UnicodeDecodeError:
            raise InputFileError(f"{flag}: {path} is not a JSON text file (it is not UTF-8)") from None
        except json.JSONDecodeError as exc:
            raise InputFileError(
                f"{flag}: {path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
            ) from None


def check_inputs(args: argparse.Namespace) -> None:
    """Every file argument the parsed command carries; inline JSON (``--spec '{...}'``) is parsed."""
    for dest, flag in FILE_ARGS.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        if isinstance(value, str) and value.lstrip().startswith("{"):
            try:
                json.loads(value)
            except json.JSONDecodeError as exc:
                raise InputFileError(f"{flag}: not valid JSON (column {exc.colno}: {exc.msg})") from None
            continue
        check_file(flag, value, json_file=dest in JSON_ARGS)


__all__ = ["FILE_ARGS", "InputFileError", "check_file", "check_inputs"]
