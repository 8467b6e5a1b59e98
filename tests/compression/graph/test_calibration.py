"""Calibration .npz loading (docs/api.md "calibration"; docs/method.md §6)."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest

from netshrink.compression.errors import CalibrationError, LimitExceededError
from netshrink.compression.graph.calibration import check_calibration, load_calibration
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


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (np.full(6, 3), r"must lie in \[0, 2\].*found values in \[3, 3\]"),  # past the 3 classes
        (np.array([0, 1, 2, -1, 0, 1]), r"must lie in \[0, 2\]"),  # -1 scored as the last class
        (np.full(6, 2**40), r"must lie in"),
        (np.array([0.5, 1, 2, 0, 1, 2]), "integer class indices"),  # accuracy was silently null
    ],
)
def test_labels_outside_the_classes_are_refused(
    tmp_path: Path, net: Network, labels: np.ndarray, match: str
) -> None:
    """2026-12-05: unchecked, labels past the classes failed the job as an internal error (an
    IndexError in the loss) or scored 0; -1 counted as the last class; 0.5 gave no accuracy."""
    path = F.write_calibration(tmp_path / "c.npz", F.random_inputs((8,), 6), labels)
    for check in (load_calibration, check_calibration):
        with pytest.raises(CalibrationError, match=match) as err:
            check(path, net)
        assert err.value.field == "labels"


@pytest.mark.parametrize(
    "labels", [np.array([0, 1, 2, 2, 1, 0], np.uint8), np.arange(6) % 2 == 0, np.arange(6.0) % 3]
)
def test_class_labels_of_any_integer_kind_load(tmp_path: Path, net: Network, labels: np.ndarray) -> None:
    cal = load_calibration(F.write_calibration(tmp_path / "c.npz", F.random_inputs((8,), 6), labels), net)
    assert cal.labels is not None and cal.labels.dtype == np.int64
    np.testing.assert_array_equal(cal.labels, labels.astype(np.int64))


def test_one_output_labels_are_regression_targets(tmp_path: Path, write) -> None:  # type: ignore[no-untyped-def]
    net = load_model(write(F.mlp_onnx((8, 16, 1))))
    targets = np.linspace(-3.5, 7.25, 6)
    path = F.write_calibration(tmp_path / "c.npz", F.random_inputs((8,), 6), targets)
    check_calibration(path, net)
    assert load_calibration(path, net).labels is not None


def test_min_samples(tmp_path: Path, net: Network) -> None:
    path = F.write_calibration(tmp_path / "c.npz", F.random_inputs((8,), 1))
    assert load_calibration(path, net).n_samples == 1  # the default: analyze and gaussian inputs
    for check in (load_calibration, check_calibration):
        with pytest.raises(CalibrationError, match="holds 1 sample") as err:
            check(path, net, min_samples=2)
        assert err.value.field == "inputs"


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
