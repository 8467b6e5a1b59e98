"""Check the local files a command names before it does anything else (no network, no model load).

A missing, unreadable or malformed file is exit 2 with one line, even when the server is down
(docs/api.md "CLI exit codes"). The core later says what a readable file *contains* that is wrong.

The JSON arguments (``--spec``, ``--architecture``: a file, or inline ``{...}``) are read and parsed
here ONCE, and the commands take the value from ``json_arg`` instead of opening the file again: a pipe
(``--spec <(...)``, ``--spec /dev/stdin``) can be read only once, and is empty the second time.
A binary argument (the model, ``--calibration``, ``--train``, ``--validation``) that is a pipe or a
device is copied once to a private temporary file, which the command then reads as often as it needs
(the loader sniffs, sizes and parses a file; before 2026-12-05 a piped model lost its first 16 bytes
to the sniff here).
"""

from __future__ import annotations

import argparse
import atexit
import copy
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

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
_PARSED = "_json_args"  # the Namespace attribute holding {dest: parsed JSON}
_SPOOL_CHUNK = 1 << 20
_SPOOLS: list[Path] = []  # the temporary directories ``spool`` made in this process


class InputFileError(ValueError):
    """A file named on the command line cannot be used; the message is the one line to print."""


def check_file(flag: str, value: str | Path, *, json_file: bool = False) -> Any:
    """Raise ``InputFileError`` unless ``value`` is a readable regular file (valid JSON if asked).

    Returns the parsed JSON of a ``json_file``, else None."""
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
        if flag != "MODEL":
            raise InputFileError(f"{flag}: {path} is empty")
        from netshrink.compression.errors import not_a_model  # the core's import only on this path

        raise InputFileError(f"{flag}: {path}: {not_a_model(data, 0)}")
    if not json_file:
        return None
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise InputFileError(f"{flag}: {path} is not a JSON text file (it is not UTF-8)") from None
    except json.JSONDecodeError as exc:
        raise InputFileError(
            f"{flag}: {path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None


def spool(flag: str, value: str | Path) -> Path:
    """``value`` itself when it is a regular file (or missing: ``check_file`` says so); a pipe or a
    device (``<(...)``, ``/dev/stdin``) copied, once, to a file in a private temporary directory that
    is removed when the command exits. Keeps the name, so a message still shows it."""
    path = Path(value)
    if not path.exists() or path.is_file() or path.is_dir():
        return path
    spool_dir = Path(tempfile.mkdtemp(prefix="netshrink-spool-"))
    if not _SPOOLS:
        atexit.register(remove_spools)  # main() removes them sooner: a one-shot command skips atexit
    _SPOOLS.append(spool_dir)
    copy_path = spool_dir / (path.name or "stdin")
    try:
        with open(path, "rb") as src, open(copy_path, "wb") as dst:
            shutil.copyfileobj(src, dst, _SPOOL_CHUNK)
    except OSError as exc:
        raise InputFileError(f"{flag}: cannot read {path}: {exc.strerror or exc}") from None
    return copy_path


def remove_spools() -> None:
    """Delete every copy ``spool`` made in this process (idempotent)."""
    while _SPOOLS:
        shutil.rmtree(_SPOOLS.pop(), ignore_errors=True)


def _read(dest: str, value: str | Path) -> Any:
    """One argument: inline JSON parsed, a file checked (and parsed, for a JSON argument)."""
    flag = FILE_ARGS[dest]
    if isinstance(value, str) and value.lstrip().startswith("{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise InputFileError(f"{flag}: not valid JSON (column {exc.colno}: {exc.msg})") from None
    return check_file(flag, value, json_file=dest in JSON_ARGS)


def check_inputs(args: argparse.Namespace) -> None:
    """Every file argument the parsed command carries; inline JSON (``--spec '{...}'``) is parsed.

    What a JSON argument parsed to is kept on ``args`` for ``json_arg``."""
    parsed: dict[str, Any] = {}
    for dest in FILE_ARGS:
        value = getattr(args, dest, None)
        if value is not None:
            if dest not in JSON_ARGS:  # a piped model or data file becomes a file the command re-reads
                value = spool(FILE_ARGS[dest], value)
                setattr(args, dest, value if isinstance(getattr(args, dest), Path) else str(value))
            data = _read(dest, value)
            if dest in JSON_ARGS:
                parsed[dest] = data
    setattr(args, _PARSED, parsed)


def json_arg(args: argparse.Namespace, dest: str) -> Any:
    """The parsed JSON of ``--spec``/``--architecture`` (``dest``), or None when it was not given.

    The value ``check_inputs`` read, so the file is opened once; read now (with the same checks and
    one-line ``InputFileError``) when ``check_inputs`` did not run, e.g. a command's ``run(args)``
    called from Python. A deep copy: the caller may change it."""
    value = getattr(args, dest, None)
    if value is None:
        return None
    parsed: dict[str, Any] = args.__dict__.setdefault(_PARSED, {})
    if dest not in parsed:
        parsed[dest] = _read(dest, value)
    return copy.deepcopy(parsed[dest])


__all__ = ["FILE_ARGS", "InputFileError", "check_file", "check_inputs", "json_arg", "remove_spools", "spool"]
