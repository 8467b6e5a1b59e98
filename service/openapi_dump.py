"""Print the OpenAPI document as sorted, indented JSON: ``python -m service.openapi_dump``.

``make openapi`` writes it to ``openapi/openapi.json``; ``tests/service/test_openapi.py`` fails
when the committed file and the app differ. No lifespan runs: no store or broker is touched.
"""

from __future__ import annotations

import json
import sys

from netshrink.service.main import create_app
from netshrink.service.settings import ServiceSettings


def render() -> str:
    """The document as committed: 2-space indent, sorted keys, trailing newline."""
    app = create_app(ServiceSettings())
    return json.dumps(app.openapi(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
