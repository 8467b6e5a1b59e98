"""Calibration .npz loading (docs/api.md "calibration"; docs/method.md §6)."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest

from netshrink.compression.errors import CalibrationError, LimitExceededError
from netshrink.compression.graph.calibration import load_calibration
from netshrink.compression.graph.loading import load_model
from netshrink.compression.graph.network import Network
from tests import factories as F


@pytest.fixture
def net(write) -> Network:  # type: ignore[no-untyped-def]
    return load_model(write(F.residual_onnx()))  # input (batch, 8)


def test_inputs_and_labels(tmp_path: Path, net: Network) -> None:
    X = F.random_inputs((8,), 20).astype(np.float64)
    y = np.arange(20) % 3
    path = F.write_calibration(tmp_path / "c.npz", X, y)
    cal = load_calibration(path, net)
    assert cal.inputs.dtype == np.float32 and cal.inputs.shape == (20, 8) and cal.n_samples == 20
    np.testing.assert_array_equal(cal.labels, y)
    assert cal.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_without_labels_and_uncompressed(tmp_path: Path, net: Network) -> None:
    cal = load_calibration(
        F.write_calibration(tmp_path / "c.npz", F.random_inputs((8,), 4), compressed=False), net
    )
    assert cal.labels is None


def test_wrong_per_sample_shape(tmp_path: Path, net: Network) -> None:
    with pytest.raises(CalibrationError, match=r"\(S, 8\)") as err:
        load_calibration(F.write_calibration(tmp_path / "c.npz", F.random_inputs((7,), 4)), net)
    assert err.value.field == "inputs"


def test_labels_length(tmp_path: Path, net: Network) -> None:
    with pytest.raises(CalibrationError) as err:
        load_calibration(F.write_calibration(tmp_path / "c.npz", F.random_inputs((8,), 4), np.arange(5)), net)
    assert err.value.field == "labels"


def test_pickled_object_array_is_refused(tmp_path: Path, net: Network) -> None:
    path = tmp_path / "evil.npz"
    obj = np.empty(4, dtype=object)
    obj[:] = [np.zeros(8)] * 4
    np.savez(path, inputs=obj)
    with pytest.raises(CalibrationError):
        load_calibration(path, net)


def test_missing_inputs_and_unknown_keys(tmp_path: Path, net: Network) -> None:
    path = tmp_path / "c.npz"
    np.savez(path, x=F.random_inputs((8,), 4))
    with pytest.raises(CalibrationError):
        load_calibration(path, net)


def test_nan_inputs(tmp_path: Path, net: Network) -> None:
    X = F.random_inputs((8,), 4)
    X[1, 1] = np.inf
    with pytest.raises(CalibrationError):
        load_calibration(F.write_calibration(tmp_path / "c.npz", X), net)


def test_decompressed_size_cap(tmp_path: Path, net: Network) -> None:
    path = F.write_calibration(tmp_path / "c.npz", np.zeros((5000, 8), np.float32))  # compresses to ~1 KB
    assert path.stat().st_size < 20_000
    with pytest.raises(LimitExceededError):
        load_calibration(path, net, max_bytes=20_000)


def test_garbage_file(tmp_path: Path, net: Network) -> None:
    path = tmp_path / "c.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("inputs.npy", b"not an npy")
    with pytest.raises(CalibrationError):
        load_calibration(path, net)


def _nan_at_end(n: int) -> np.ndarray:
    X = F.random_inputs((8,), n).astype(np.float64)
    X[-1, -1] = np.nan
    return X


@pytest.mark.parametrize(
    ("inputs", "labels", "error"),
    [
        (_nan_at_end(300), None, "NaN or Inf"),
        (np.full((2, 8), 1e300), None, "outside float32"),
        (F.random_inputs((7,), 4), None, "must have shape"),
        (F.random_inputs((8,), 4), np.array([0.0, 1.0, np.inf, 2.0]), "'labels' contains"),
        (F.random_inputs((8,), 4), np.arange(5), "'labels' must have shape"),
    ],
)
def test_the_streaming_check_and_the_loader_agree(
    tmp_path: Path, net: Network, inputs: np.ndarray, labels: np.ndarray | None, error: str
) -> None:
    """``check_calibration`` (API, chunked) refuses exactly what ``load_calibration`` (worker) does."""
    from netshrink.compression.graph.calibration import check_calibration

    path = F.write_calibration(tmp_path / "c.npz", inputs, labels)
    with pytest.raises(CalibrationError, match=error):
        load_calibration(path, net)
    with pytest.raises(CalibrationError, match=error):
        check_calibration(path, net)
    good = F.write_calibration(tmp_path / "ok.npz", F.random_inputs((8,), 300))
    check_calibration(good, net)
    assert load_calibration(good, net).n_samples == 300
