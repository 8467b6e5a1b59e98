"""Print the OpenAPI document as sorted, indented JSON: ``python -m service.openapi_dump``.

Keys are sorted, except the media types of a ``content`` map, which keep the server's order: a
generator that picks one media type per response takes the first one it knows
(openapi-python-client does), so the artifact download lists ``application/octet-stream`` first
and a generated client reads every artifact as bytes (``routes/artifacts.py``).

``make openapi`` writes it to ``openapi/openapi.json``; ``tests/service/test_openapi.py`` fails
when the committed file and the app differ. No lifespan runs: no store or broker is touched.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from netshrink.service.main import create_app
from netshrink.service.settings import ServiceSettings


def _sorted(value: Any, key: str | None = None) -> Any:
    """``value`` with every mapping's keys sorted, but a ``content`` map's media types in order."""
    if isinstance(value, dict):
        keep = key == "content" and all("/" in k for k in value)
        names = list(value) if keep else sorted(value)
        return {k: _sorted(value[k], k) for k in names}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def render() -> str:
    """The document as committed: 2-space indent, sorted keys (see above), trailing newline."""
    app = create_app(ServiceSettings())
    return json.dumps(_sorted(app.openapi()), indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
