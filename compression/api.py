"""The core's public entry points: load, compress, analyze.

``workers/run.py`` and ``cli/`` call only these. They take plain paths, arrays and a
``CompressSpec``, report progress through a callback, and check for cancellation between layers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ProgressEvent:
    """One progress update: ``stage`` (loading, compressing, measuring, exporting, ...), layer i of n."""

    stage: str
    layer: int = 0
    layers_total: int = 0
    fraction: float = 0.0


ProgressFn = Callable[[ProgressEvent], None]
CancelFn = Callable[[], bool]


@dataclass
class CompressionResult:
    """What a compress or analyze run produces: the report (JSON-ready) and the artifact bytes."""

    report: dict[str, Any]
    artifacts: dict[str, bytes] = field(default_factory=dict)  # name -> bytes (model.onnx, model.pt, ...)

    def __post_init__(self) -> None:
        self.report.setdefault("artifacts", [])
        for name, data in list(self.artifacts.items()):
            self._index(name, data)

    def _index(self, name: str, data: bytes) -> None:
        entries = [a for a in self.report["artifacts"] if a["name"] != name]
        entries.append({"name": name, "size_bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
        self.report["artifacts"] = sorted(entries, key=lambda a: a["name"])

    def add(self, name: str, data: bytes) -> None:
        """Add an artifact (e.g. ``report.html``) and list it in ``report["artifacts"]``."""
        self.artifacts[name] = data
        self._index(name, data)

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """Write every artifact plus ``report.json`` under ``out_dir``; return name -> path."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths: dict[str, Path] = {}
        items = dict(self.artifacts)
        items["report.json"] = json.dumps(self.report, indent=2, sort_keys=True).encode()
        for name, data in items.items():
            path = out / name
            tmp = path.with_name(f".{name}.tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
            paths[name] = path
        return paths
