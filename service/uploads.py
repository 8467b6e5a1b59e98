"""Stream a ``multipart/form-data`` submission to disk: bounded, hashed, sniffed, never whole in memory.

Starlette's own form parser spools every file part to a temporary file *without* a size limit, so
an oversized upload would fill the disk before the route could refuse it. Here the request stream
feeds ``python_multipart`` directly, and each part is checked as it arrives:

- file parts (``model``, ``calibration``) are written chunk by chunk into ``dest_dir`` while a
  sha256 runs over them; crossing the part's byte limit aborts with 413 at once;
- the first bytes of each file are sniffed; an unknown container aborts with 415 before the rest
  is read;
- JSON parts (``spec``, ``architecture``, as text fields or files) are kept in memory up to
  ``max_json_field_bytes``;
- zip containers (``.pt``, ``.npz``) get their declared uncompressed size checked from the
  central directory (zip-bomb guard), before anything is decompressed.

Ref: docs/api.md "POST /v1/jobs"; issue 4 ("streams the upload to disk ... caps the decompressed size").
"""

from __future__ import annotations

import hashlib
import os
import struct
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

from python_multipart.multipart import MultipartParser, parse_options_header

from netshrink.compression.errors import not_a_model
from netshrink.service.errors import ApiError

ModelFormat = Literal["onnx", "pt", "safetensors"]
FILE_PARTS = ("model", "calibration", "train", "validation")  # train/validation: kind finetune
JSON_PARTS = ("spec", "architecture")
SNIFF_BYTES = 16
MAX_PARTS = 8


@dataclass(frozen=True)
class UploadLimits:
    """Byte limits per part kind (from ``ServiceSettings``)."""

    model_bytes: int
    calibration_bytes: int
    json_bytes: int
    unzipped_bytes: int

    @property
    def request_bytes(self) -> int:
        """Largest request body that can be valid: every part at its limit, plus multipart framing."""
        return self.model_bytes + 2 * self.calibration_bytes + 2 * self.json_bytes + 64 * 1024


@dataclass
class UploadedFile:
    """One file part as written to disk."""

    field: str
    filename: str
    path: Path
    size_bytes: int = 0
    sha256: str = ""
    format: str = ""  # ModelFormat for ``model``, "npz" for ``calibration``


@dataclass
class ParsedUpload:
    """The whole submission: file parts on disk and JSON parts as text. ``cleanup`` deletes the files."""

    files: dict[str, UploadedFile] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)

    def cleanup(self) -> None:
        for f in self.files.values():
            f.path.unlink(missing_ok=True)


# ---- sniffing ------------------------------------------------------------------------------------
ZIP_MAGIC = b"PK\x03\x04"
NPY_MAGIC = b"\x93NUMPY"


def sniff_model(head: bytes) -> ModelFormat | None:
    """The model container from its first bytes, or None when it is none of ours.

    - ``pt``: a zip (``torch.save`` since 1.6) or a legacy pickle (protocol marker ``0x80``);
    - ``safetensors``: little-endian u64 header length, then a JSON object ``{``;
    - ``onnx``: a ModelProto whose first field is ``ir_version`` (field 1, varint: tag ``0x08``),
      which is how every ONNX serializer writes it. The loader runs the real checker afterwards.
    """
    if head.startswith(ZIP_MAGIC) or head[:1] == b"\x80":
        return "pt"
    if len(head) >= 9 and head[8:9] == b"{":
        (n,) = struct.unpack("<Q", head[:8])
        if 0 < n < 100 * 1024 * 1024:
            return "safetensors"
    if head[:1] == b"\x08":
        return "onnx"
    return None


def check_zip_size(path: Path, limit: int) -> None:
    """Refuse a zip declaring more than ``limit`` uncompressed bytes (413), or a broken zip (400)."""
    try:
        with zipfile.ZipFile(path) as zf:
            total = sum(info.file_size for info in zf.infolist())
    except zipfile.BadZipFile as exc:
        raise ApiError(
            400, "model-format", "The file could not be read", f"{path.name}: not a valid zip"
        ) from exc
    if total > limit:
        raise ApiError(
            413,
            "limit-exceeded",
            "A configured limit was exceeded",
            f"zip expands to {total} bytes > {limit}",
        )


# ---- streaming parser -----------------------------------------------------------------------------
class _Part:
    def __init__(self) -> None:
        self.headers: dict[bytes, bytes] = {}
        self.name = ""
        self.limit = 0
        self.size = 0
        self.file: UploadedFile | None = None
        self.fh: IO[bytes] | None = None
        self.sha = hashlib.sha256()
        self.head = b""
        self.text = bytearray()
        self.unknown_model = False  # sniffed as none of ours: refused once its size is known


class _Collector:
    """``python_multipart`` callbacks; raises ``ApiError`` from inside ``parser.write`` to abort."""

    def __init__(self, dest_dir: Path, limits: UploadLimits, out: ParsedUpload) -> None:
        self.dest_dir, self.limits, self.out = dest_dir, limits, out
        self.part = _Part()
        self.hname = b""
        self.hvalue = b""
        self.count = 0
        self.ended = False  # the closing boundary was seen (python_multipart's finalize does not check)

    def on_part_begin(self) -> None:
        self.part = _Part()
        self.count += 1
        if self.count > MAX_PARTS:
            raise ApiError(400, "bad-multipart", "Malformed multipart body", f"more than {MAX_PARTS} parts")

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.hname += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.hvalue += data[start:end]

    def on_header_end(self) -> None:
        self.part.headers[self.hname.lower()] = self.hvalue
        self.hname, self.hvalue = b"", b""

    def on_headers_finished(self) -> None:
        _, opts = parse_options_header(self.part.headers.get(b"content-disposition", b""))
        name = opts.get(b"name", b"").decode("utf-8", "replace")
        if name in self.out.files or name in self.out.fields:
            raise ApiError(400, "bad-multipart", "Malformed multipart body", f"part {name!r} given twice")
        self.part.name = name
        if name in FILE_PARTS:
            filename = (
                os.path.basename(opts.get(b"filename", name.encode()).decode("utf-8", "replace")) or name
            )
            path = self.dest_dir / f"{name}.upload"
            self.part.file = UploadedFile(field=name, filename=filename[:255], path=path)
            self.out.files[name] = self.part.file  # registered first, so cleanup sees partial files
            self.part.fh = open(path, "wb")  # noqa: SIM115 - closed in on_part_end / close()
            self.part.limit = self.limits.model_bytes if name == "model" else self.limits.calibration_bytes
        elif name in JSON_PARTS:
            self.part.limit = self.limits.json_bytes
        else:
            raise ApiError(
                422,
                "validation",
                "The request is invalid",
                f"unknown form field {name!r}; expected {', '.join(FILE_PARTS + JSON_PARTS)}",
            )

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part, chunk = self.part, data[start:end]
        part.size += len(chunk)
        if part.size > part.limit:
            raise ApiError(
                413,
                "limit-exceeded",
                "A configured limit was exceeded",
                f"form field {part.name!r} exceeds {part.limit} bytes",
            )
        if part.fh is None:
            part.text += chunk
            return
        if len(part.head) < SNIFF_BYTES:
            part.head += chunk[: SNIFF_BYTES - len(part.head)]
            if len(part.head) >= SNIFF_BYTES:
                self._sniff(part)
        part.sha.update(chunk)
        part.fh.write(chunk)

    def on_part_end(self) -> None:
        part = self.part
        if part.fh is None:
            self.out.fields[part.name] = part.text.decode("utf-8", "replace")
            return
        part.fh.close()
        part.fh = None
        assert part.file is not None
        if len(part.head) < SNIFF_BYTES:
            self._sniff(part)
        if part.unknown_model:  # the core's sentence, as the CLI prints it for the same file
            raise ApiError(
                415, "unsupported-media-type", "Unsupported model format", not_a_model(part.head, part.size)
            )
        part.file.size_bytes, part.file.sha256 = part.size, part.sha.hexdigest()

    def _sniff(self, part: _Part) -> None:
        assert part.file is not None
        if part.name == "model":
            fmt = sniff_model(part.head)
            if fmt is None:
                part.unknown_model = True
                return
            part.file.format = fmt
        elif part.head.startswith(ZIP_MAGIC):
            part.file.format = "npz"
        elif part.head.startswith(NPY_MAGIC):
            part.file.format = "npy"  # a bare array of inputs (no labels); np.load tells them apart
        else:
            raise ApiError(
                415,
                "unsupported-media-type",
                "Unsupported calibration format",
                "calibration must be an .npz (inputs, optional labels) or a .npy of inputs",
            )

    def on_end(self) -> None:
        self.ended = True

    def close(self) -> None:
        if self.part.fh is not None:
            self.part.fh.close()


_CALLBACKS = tuple(name for name in dir(_Collector) if name.startswith("on_"))


async def receive_upload(
    stream: AsyncIterator[bytes], content_type: str, dest_dir: Path, limits: UploadLimits
) -> ParsedUpload:
    """Parse a multipart body from ``stream`` into ``dest_dir``; on any failure delete what was written.

    Raises ``ApiError``: 400 malformed (python_multipart's errors, its constructor's included, and a
    body that ends before its closing boundary), 413 over a limit, 415 unknown container, 422 unknown
    or missing field. An ``OSError`` writing ``dest_dir`` (a full disk) is raised as is: it is not the
    request's fault (until 2026-12-05 it was a 400 "malformed multipart body"). The caller owns
    ``dest_dir`` (and removes it when the submission is refused).
    """
    mime, params = parse_options_header(content_type)
    if mime != b"multipart/form-data" or not params.get(b"boundary"):
        raise ApiError(415, "unsupported-media-type", "Unsupported media type", "send multipart/form-data")
    out = ParsedUpload()
    collector = _Collector(dest_dir, limits, out)
    callbacks = {name: getattr(collector, name) for name in _CALLBACKS}
    try:  # the constructor refuses a boundary over 256 characters (FormParserError, a ValueError)
        parser = MultipartParser(params[b"boundary"], callbacks)  # type: ignore[arg-type]
        async for chunk in stream:
            parser.write(chunk)
        parser.finalize()
        if not collector.ended:  # a truncated body: its last part never ended (no size, no sha256)
            raise ApiError(
                400, "bad-multipart", "Malformed multipart body", "the body ended before its closing boundary"
            )
        for f in out.files.values():
            if f.format in ("pt", "npz"):
                if zipfile.is_zipfile(f.path):
                    check_zip_size(f.path, limits.unzipped_bytes)
    except (ApiError, OSError):  # an OSError is the server's disk, not the body: 507/500 (service/errors.py)
        collector.close()
        out.cleanup()
        raise
    except Exception as exc:  # python_multipart raises plain ValueErrors / MultipartParseError
        collector.close()
        out.cleanup()
        raise ApiError(400, "bad-multipart", "Malformed multipart body", str(exc)[:200]) from exc
    if "model" not in out.files:
        out.cleanup()
        raise ApiError(422, "validation", "The request is invalid", "the model file part is required")
    return out


__all__ = [
    "ParsedUpload",
    "UploadLimits",
    "UploadedFile",
    "check_zip_size",
    "receive_upload",
    "sniff_model",
]
