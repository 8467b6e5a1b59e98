"""Fixtures for ``netshrink submit``: the API.md contract server shared with the SDK tests."""

from tests.client.conftest import model_file, server, state  # noqa: F401  (re-exported fixtures)
