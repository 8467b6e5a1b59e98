"""``.npy`` / ``.npz`` arrays read without trusting their headers: declared sizes first, then a capped stream.

``np.load`` trusts what a file says: a 1 MB ``.npz`` whose member inflates to 1.25 GiB is inflated
whole, and a header declaring shape ``(2**40, 64)`` makes numpy try to allocate it. Here:

1. every size is checked before a byte of array data is decompressed: the zip central directory's
   declared uncompressed sizes (their sum must stay under the cap), then each member's ``.npy``
   header (magic, version, ``{descr, fortran_order, shape}``), whose ``prod(shape) * itemsize``
   must equal the member's declared size minus the header, and stay under the cap;
2. only then is data read, through ``zipfile``'s streaming decompressor in fixed chunks with a
   running count: a member that yields more (or fewer) bytes than declared is refused, so a lying
   directory cannot grow memory past what was checked.

``index_arrays`` does step 1; ``read_arrays`` materializes the arrays (memory = their declared size,
which step 1 capped); ``iter_chunks`` streams one array in bounded chunks, for validating values
without holding the array (the API checks calibration data this way).
Only plain numeric dtypes (bool, int, uint, float) are accepted: no objects, no structured records.

Ref: numpy NEP 1 "A Simple File Format for NumPy Arrays" (``numpy.lib.format``); PKWARE
APPNOTE.TXT §4.3.12 (central directory: uncompressed size); docs/method.md §6 "Loading safely".
"""

from __future__ import annotations

import math
import tokenize
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from numpy.lib import format as npy_format

from netshrink.compression.errors import CompressionError, LimitExceededError

NUMERIC_KINDS = "biuf"
NPY_MAX_HEADER_BYTES = 10_000  # numpy's own default for untrusted headers
CHUNK_BYTES = 1 << 20
NPY_MAGIC = b"\x93NUMPY"


@dataclass(frozen=True)
class ArrayHeader:
    """What one ``.npy`` header declares; ``nbytes`` = prod(shape) * itemsize (checked against the file)."""

    name: str  # the key in the .npz ("inputs"), or "" for a bare .npy
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    nbytes: int


def is_npy(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(len(NPY_MAGIC)) == NPY_MAGIC


def _read_header(fh: IO[bytes], name: str, invalid: type[CompressionError]) -> ArrayHeader:
    try:
        version = npy_format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = npy_format.read_array_header_1_0(fh, max_header_size=NPY_MAX_HEADER_BYTES)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = npy_format.read_array_header_2_0(fh, max_header_size=NPY_MAX_HEADER_BYTES)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except (
        ValueError,
        OSError,
        EOFError,
        SyntaxError,
        TypeError,
        zipfile.BadZipFile,
        tokenize.TokenError,  # numpy re-tokenizes a header that literal_eval refused: "(" unclosed
        MemoryError,  # literal_eval's parser stack on a 9,000-deep "---…1" (the header is ≤ 10 kB)
        RecursionError,
    ) as exc:
        raise invalid(f"{name or 'the array'}: not a readable .npy header: {exc}"[:300]) from exc
    label = name or "the array"
    if dtype.kind not in NUMERIC_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise invalid(f"{label} has dtype {dtype}; only numeric (bool, int, uint, float) arrays are accepted")
    if any(d < 0 for d in shape):
        raise invalid(f"{label} declares a negative dimension: {shape}")
    return ArrayHeader(
        label if name else "", tuple(shape), dtype, bool(fortran), math.prod(shape) * dtype.itemsize
    )


def _check_total(headers: dict[str, ArrayHeader], declared: int, max_bytes: int, what: str) -> None:
    total = sum(h.nbytes for h in headers.values())
    if max(total, declared) > max_bytes:
        raise LimitExceededError(
            f"{what} declares {max(total, declared)} bytes of array data; the limit is {max_bytes}"
        )


def index_arrays(
    path: str | Path, *, max_bytes: int, invalid: type[CompressionError]
) -> dict[str, ArrayHeader]:
    """The arrays an ``.npz`` (or a bare ``.npy``, key ``""``) declares, checked before decompression.

    Raises ``LimitExceededError`` when the declared data exceeds ``max_bytes`` and ``invalid`` when a
    header is malformed, not numeric, or disagrees with the zip directory / the file size.
    """
    path = Path(path)
    try:
        if is_npy(path):
            with open(path, "rb") as fh:
                header = _read_header(fh, "", invalid)
                data_bytes = path.stat().st_size - fh.tell()
            _check_total({"": header}, 0, max_bytes, "the .npy file")
            if data_bytes != header.nbytes:
                raise invalid(
                    f"the .npy header declares {header.nbytes} bytes of data but the file holds {data_bytes}"
                )
            return {"": header}
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            _check_total({}, sum(i.file_size for i in infos), max_bytes, "the archive")
            headers: dict[str, ArrayHeader] = {}
            for info in infos:
                if not info.filename.endswith(".npy") or info.is_dir():
                    raise invalid(f"{info.filename!r} is not an .npy array")
                name = info.filename[: -len(".npy")]
                with zf.open(info) as member:
                    header = _read_header(member, name, invalid)
                    data_bytes = info.file_size - member.tell()
                _check_total({name: header}, 0, max_bytes, f"{name!r}")
                if data_bytes != header.nbytes:
                    raise invalid(
                        f"{name!r}: its header declares {header.nbytes} bytes of data, "
                        f"the archive directory {data_bytes}"
                    )
                headers[name] = header
            _check_total(headers, 0, max_bytes, "the archive")
            return headers
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, NotImplementedError, RuntimeError) as exc:
        raise invalid(f"not a readable .npz/.npy: {exc}"[:300]) from exc


def _skip_header(fh: IO[bytes]) -> None:
    version = npy_format.read_magic(fh)
    reader = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
    reader(fh, max_header_size=NPY_MAX_HEADER_BYTES)


@contextmanager
def _data_stream(path: Path, header: ArrayHeader) -> Iterator[IO[bytes]]:
    if header.name == "":
        with open(path, "rb") as fh:
            _skip_header(fh)
            yield fh
        return
    with zipfile.ZipFile(path) as zf, zf.open(header.name + ".npy") as member:
        _skip_header(member)
        yield member


def _fill(stream: IO[bytes], out: memoryview, header: ArrayHeader, invalid: type[CompressionError]) -> None:
    """Fill ``out`` from ``stream`` chunk by chunk; refuse a stream that ends early."""
    pos = 0
    while pos < len(out):
        n = stream.readinto(out[pos : pos + CHUNK_BYTES])  # type: ignore[attr-defined]
        if not n:
            raise invalid(
                f"{header.name or 'the array'}: the data ends before its declared {header.nbytes} bytes"
            )
        pos += n


def _no_trailing(stream: IO[bytes], header: ArrayHeader, invalid: type[CompressionError]) -> None:
    if stream.read(1):
        raise invalid(f"{header.name or 'the array'}: more data than its header declares")


def read_arrays(
    path: str | Path, headers: dict[str, ArrayHeader], *, invalid: type[CompressionError]
) -> dict[str, np.ndarray]:
    """Materialize the arrays ``index_arrays`` checked; each buffer is allocated at its declared size
    and filled from the decompressing stream (never more than declared)."""
    path = Path(path)
    out: dict[str, np.ndarray] = {}
    try:
        for key, header in headers.items():
            arr = np.empty(header.shape, dtype=header.dtype, order="F" if header.fortran_order else "C")
            flat = arr.reshape(-1, order="A").view(np.uint8)  # (nbytes,) view of arr's memory
            with _data_stream(path, header) as stream:
                _fill(stream, flat.data, header, invalid)
                _no_trailing(stream, header, invalid)
            out[key] = arr
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:  # CRC mismatch, truncated member
        raise invalid(f"{path.name}: unreadable array data: {exc}"[:300]) from exc
    return out


def iter_chunks(
    path: str | Path, header: ArrayHeader, *, invalid: type[CompressionError], chunk_bytes: int = CHUNK_BYTES
) -> Iterator[np.ndarray]:
    """One array's values as 1-D chunks (storage order) of at most ``chunk_bytes``; memory O(chunk).

    Each chunk is a view of one reused buffer: use it before asking for the next.
    """
    path = Path(path)
    itemsize = header.dtype.itemsize
    step = max(1, chunk_bytes // itemsize) * itemsize
    buf = bytearray(step)
    left = header.nbytes
    try:
        with _data_stream(path, header) as stream:
            while left > 0:
                view = memoryview(buf)[: min(step, left)]
                _fill(stream, view, header, invalid)
                left -= len(view)
                yield np.frombuffer(view, dtype=header.dtype)
            _no_trailing(stream, header, invalid)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise invalid(f"{path.name}: unreadable array data: {exc}"[:300]) from exc


__all__ = ["ArrayHeader", "index_arrays", "is_npy", "iter_chunks", "read_arrays"]
