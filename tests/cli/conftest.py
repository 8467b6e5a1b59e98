"""Fixtures for ``netshrink submit``: the docs/api.md contract server shared with the SDK tests."""

from tests.client.conftest import model_file, server, state  # noqa: F401  (re-exported fixtures)
