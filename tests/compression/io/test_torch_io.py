"""State-dict loading: torch.load(weights_only=True) and safetensors only (docs/method.md §6)."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from netshrink.compression.errors import LimitExceededError, ModelFormatError
from netshrink.compression.graph.loading import LoadLimits, load_model, sniff_format
from netshrink.compression.io.torch_io import load_safetensors, load_torch_state_dict, natural_key
from tests import factories as F


class _Exploit:
    """Unpickling this would create ``target`` (if the unpickler let it run)."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.mkdir, (str(self.target),))


def test_malicious_zip_pickle_executes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"0.weight": torch.zeros(2, 2), "payload": _Exploit(target)}, path)
    with pytest.raises(ModelFormatError):
        load_model(path)
    assert not target.exists()


def test_malicious_legacy_pickle_executes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps(_Exploit(target), protocol=2))
    assert sniff_format(path) == "pytorch"
    with pytest.raises(ModelFormatError):
        load_model(path)
    assert not target.exists()


def test_non_tensor_values_are_refused(tmp_path: Path) -> None:
    path = F.write_pt({"0.weight": torch.zeros(2, 2), "epoch": 3}, tmp_path / "ckpt.pt")
    with pytest.raises(ModelFormatError, match="epoch"):
        load_model(path)


def test_not_a_mapping_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(2, 2)], path)
    with pytest.raises(ModelFormatError):
        load_model(path)


def test_zip_bomb_cap(tmp_path: Path) -> None:
    path = F.write_pt(F.tiny_mlp(), tmp_path / "m.pt")
    with pytest.raises(LimitExceededError):
        load_model(path, limits=LoadLimits(max_decompressed_bytes=100))


def test_corrupt_zip_is_a_format_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(b"PK\x03\x04" + b"\x00" * 64)
    with pytest.raises(ModelFormatError):
        load_model(path)


def test_zip_without_torch_payload(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("hello.txt", "not a model")
    with pytest.raises(ModelFormatError):
        load_model(path)


def test_pt_zip_and_legacy_load_the_same_arrays(tmp_path: Path) -> None:
    mlp = F.tiny_mlp()
    new = F.write_pt(mlp, tmp_path / "new.pt")
    old = tmp_path / "old.pt"
    torch.save(mlp.state_dict(), old, _use_new_zipfile_serialization=False)
    a = load_torch_state_dict(new, max_decompressed_bytes=2**30)
    b = load_torch_state_dict(old, max_decompressed_bytes=2**30)
    assert list(a) == list(b) == list(mlp.state_dict())
    for k, v in mlp.state_dict().items():
        np.testing.assert_array_equal(a[k], v.numpy())
        np.testing.assert_array_equal(b[k], v.numpy())


def test_half_precision_becomes_float32(tmp_path: Path) -> None:
    path = F.write_pt({"0.weight": torch.ones(3, 2, dtype=torch.bfloat16)}, tmp_path / "h.pt")
    out = load_torch_state_dict(path, max_decompressed_bytes=2**30)
    assert out["0.weight"].dtype == np.float32


def test_safetensors_sniffed_and_naturally_ordered(tmp_path: Path) -> None:
    widths = (3, 4, 4, 4, 4, 4, 4, 2)  # keys 0, 2, ..., 12: "10" sorts after "2" naturally
    mlp = F.tiny_mlp(widths)
    path = F.write_safetensors(mlp, tmp_path / "m.bin")
    assert sniff_format(path) == "safetensors"
    out = load_safetensors(path)
    weights = [k for k in mlp.state_dict() if k.endswith(".weight")]
    assert [k for k in out if k.endswith(".weight")] == weights and set(out) == set(mlp.state_dict())
    assert sorted(["10.weight", "2.weight", "0.bias"], key=natural_key) == ["0.bias", "2.weight", "10.weight"]


def test_corrupt_safetensors(tmp_path: Path) -> None:
    good = F.write_safetensors(F.tiny_mlp(), tmp_path / "m.safetensors").read_bytes()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(ModelFormatError):
        load_model(path)


def test_nan_in_state_dict(tmp_path: Path) -> None:
    sd = F.tiny_mlp().state_dict()
    sd["2.weight"][0, 0] = float("nan")
    from netshrink.compression.errors import InvalidWeightsError

    with pytest.raises(InvalidWeightsError) as err:
        load_model(F.write_pt(sd, tmp_path / "nan.pt"))
    assert err.value.nodes == ["2.weight"]


def test_an_empty_state_dict_is_nothing_to_compress(tmp_path: Path) -> None:
    """Issue 13 §9: a valid container with no tensors is a 422 (nothing to compress), not a 400."""
    import torch

    from netshrink.compression.errors import NothingToCompressError
    from netshrink.compression.io.torch_io import load_torch_state_dict

    path = tmp_path / "empty.pt"
    torch.save({}, path)
    with pytest.raises(NothingToCompressError, match="empty"):
        load_torch_state_dict(path, max_decompressed_bytes=1 << 20)
