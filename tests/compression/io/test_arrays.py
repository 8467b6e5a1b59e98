"""``.npy``/``.npz`` reading that checks declared sizes before decompressing (issue 13 §2, §3)."""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from netshrink.compression.errors import CalibrationError, LimitExceededError
from netshrink.compression.io.arrays import index_arrays, iter_chunks, read_arrays

MIB = 1 << 20


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def npy_header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    """A version 1.0 .npy header declaring ``shape``, exactly as numpy writes one."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def write_npz(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_round_trip_matches_numpy(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {
        "inputs": rng.standard_normal((5, 3, 2)).astype(np.float32),
        "fortran": np.asfortranarray(rng.standard_normal((4, 6))),
        "labels": rng.integers(0, 10, 5).astype(np.int64),
        "flags": np.array([True, False]),
        "scalar": np.array(3.5, dtype=">f8"),
        "empty": np.zeros((0, 4), dtype=np.uint8),
    }
    path = tmp_path / "a.npz"
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]
    headers = index_arrays(path, max_bytes=MIB, invalid=CalibrationError)
    assert {k: h.shape for k, h in headers.items()} == {k: v.shape for k, v in arrays.items()}
    loaded = read_arrays(path, headers, invalid=CalibrationError)
    for key, value in arrays.items():
        assert loaded[key].dtype == value.dtype
        np.testing.assert_array_equal(loaded[key], value)
    chunks = list(
        np.array(c) for c in iter_chunks(path, headers["inputs"], invalid=CalibrationError, chunk_bytes=16)
    )
    assert max(c.nbytes for c in chunks) <= 16
    np.testing.assert_array_equal(np.concatenate(chunks), arrays["inputs"].ravel())


def test_bare_npy_is_indexed_under_the_empty_key(tmp_path: Path) -> None:
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    path = tmp_path / "a.npy"
    path.write_bytes(npy_bytes(arr))
    headers = index_arrays(path, max_bytes=MIB, invalid=CalibrationError)
    assert list(headers) == [""] and headers[""].shape == (3, 4)
    np.testing.assert_array_equal(read_arrays(path, headers, invalid=CalibrationError)[""], arr)


def test_deflate_bomb_is_refused_from_the_directory_before_inflating(tmp_path: Path) -> None:
    # 64 MiB of zeros deflate to ~64 KiB; the cap is 1 MiB.
    bomb = write_npz(tmp_path / "bomb.npz", {"inputs.npy": npy_bytes(np.zeros((16 * MIB,), np.float32))})
    assert bomb.stat().st_size < 200 * 1024
    with pytest.raises(LimitExceededError, match="the limit is 1048576"):
        index_arrays(bomb, max_bytes=MIB, invalid=CalibrationError)


@pytest.mark.parametrize("container", ["npy", "npz"])
def test_header_declaring_an_absurd_shape_is_a_limit_error_not_a_memory_error(
    tmp_path: Path, container: str
) -> None:
    """Issue 13 §3: a header declaring (2**40, 64) made numpy raise MemoryError (a 500)."""
    data = npy_header((2**40, 64)) + b"\x00" * 64
    path = tmp_path / f"huge.{container}"
    if container == "npy":
        path.write_bytes(data)
    else:
        write_npz(path, {"inputs.npy": data})
    with pytest.raises(LimitExceededError, match=str(2**40 * 64 * 4)):
        index_arrays(path, max_bytes=2**31, invalid=CalibrationError)


def test_header_disagreeing_with_the_directory_is_refused(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "short.npz", {"inputs.npy": npy_header((1000, 4)) + b"\x00" * 16})
    with pytest.raises(CalibrationError, match="declares 16000 bytes of data, the archive directory 16"):
        index_arrays(path, max_bytes=MIB, invalid=CalibrationError)
    npy = tmp_path / "short.npy"
    npy.write_bytes(npy_header((1000, 4)) + b"\x00" * 16)
    with pytest.raises(CalibrationError, match="the file holds 16"):
        index_arrays(npy, max_bytes=MIB, invalid=CalibrationError)


def _lying_zip(payload: bytes, declared: int) -> bytes:
    """A one-member deflated zip whose local header and central directory both understate the size."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("inputs.npy", payload)
    raw = bytearray(buf.getvalue())
    true_size = struct.pack("<I", len(payload))
    for sig, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = raw.index(sig)
        assert raw[at + offset : at + offset + 4] == true_size
        raw[at + offset : at + offset + 4] = struct.pack("<I", declared)
    return bytes(raw)


@pytest.mark.parametrize("declared", [1024, 2 * MIB])
def test_member_inflating_past_its_declared_size_is_refused(tmp_path: Path, declared: int) -> None:
    """The running cap: the directory says ``declared`` bytes, the deflate stream holds 8 MiB; nothing
    past the declared size is produced and the CRC mismatch refuses the file (a small member while
    it is indexed, a large one at the end of its read)."""
    header = npy_header((declared // 4,))  # float32, exactly what the lying directory claims
    path = tmp_path / "liar.npz"
    path.write_bytes(_lying_zip(header + b"\x00" * (8 * MIB), len(header) + declared))
    with pytest.raises(CalibrationError, match="CRC"):
        headers = index_arrays(path, max_bytes=4 * MIB, invalid=CalibrationError)
        assert headers["inputs"].nbytes == declared
        read_arrays(path, headers, invalid=CalibrationError)
    if declared > MIB:
        with pytest.raises(CalibrationError, match="CRC"):
            for _ in iter_chunks(path, headers["inputs"], invalid=CalibrationError):
                pass


@pytest.mark.parametrize("descr", ["|O", "<U4", "|V8", "<c8"])
def test_non_numeric_dtypes_are_refused_from_the_header(tmp_path: Path, descr: str) -> None:
    path = tmp_path / "x.npy"
    path.write_bytes(npy_header((2,), descr) + b"\x00" * 64)
    with pytest.raises(CalibrationError):
        index_arrays(path, max_bytes=MIB, invalid=CalibrationError)


@pytest.mark.parametrize(
    "member",
    [
        b"not an npy at all",
        b"\x93NUMPY\x01\x00\xff\xff" + b"{" * 100,  # header length beyond the data
        b"\x93NUMPY\x01\x00\x20\x00{'descr': '<f4', 'shape': [1e9]}",
        b"\x93NUMPY\x09\x00\x10\x00{}              ",  # unknown version
    ],
)
def test_malformed_headers_are_the_callers_error_class(tmp_path: Path, member: bytes) -> None:
    path = write_npz(tmp_path / "bad.npz", {"inputs.npy": member})
    with pytest.raises(CalibrationError):
        index_arrays(path, max_bytes=MIB, invalid=CalibrationError)


def _v1(header: bytes) -> bytes:
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


@pytest.mark.parametrize(
    "header",
    [
        b"(",  # literal_eval refuses it, numpy re-tokenizes it: tokenize.TokenError
        b'"""',  # the same, an unterminated string
        b"-" * 9000 + b"1",  # literal_eval's parser runs out of stack: MemoryError
    ],
    ids=["unclosed-paren", "unclosed-string", "deep-unary"],
)
@pytest.mark.parametrize("bare", [True, False], ids=["npy", "npz"])
def test_headers_that_break_numpys_parser_are_the_callers_error_class(
    tmp_path: Path, header: bytes, bare: bool
) -> None:
    """Found by tests/service/test_hostile.py's calibration fuzz: each was a 500 on POST /v1/jobs."""
    if bare:
        path = tmp_path / "bad.npy"
        path.write_bytes(_v1(header))
    else:
        path = write_npz(tmp_path / "bad.npz", {"inputs.npy": _v1(header)})
    with pytest.raises(CalibrationError, match="not a readable .npy header"):
        index_arrays(path, max_bytes=MIB, invalid=CalibrationError)


def test_crc_mismatch_is_refused(tmp_path: Path) -> None:
    data = npy_bytes(np.arange(64, dtype=np.float32))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("inputs.npy", data)
    raw = bytearray(buf.getvalue())
    raw[raw.index(data) + len(data) - 1] ^= 0xFF  # flip a data byte; the stored CRC no longer matches
    path = tmp_path / "crc.npz"
    path.write_bytes(bytes(raw))
    with pytest.raises(CalibrationError, match="CRC"):
        read_arrays(
            path, index_arrays(path, max_bytes=MIB, invalid=CalibrationError), invalid=CalibrationError
        )
