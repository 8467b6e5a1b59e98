# ---- appended by .ci/mutate to the copy under build/mutate only (source: .ci/mutate_conftest.py) ----
# mutmut forks one process per mutant from a fork server that has collected the tests (imported this
# file); what is computed here once is shared by every mutant's process. Neither part changes what a
# test checks.


def _memoize_model_bytes() -> None:
    """The ONNX bytes of the session fixtures' models, exported once in the fork server.

    ``torch.onnx.export`` costs seconds; each mutant's pytest session would re-export them for
    ``mlp_net``/``cnn_net``. The bytes come from torch and ``tests.factories`` alone (no mutated
    module), so every mutant would get the same bytes anyway.
    """
    import functools

    from tests import factories

    for name in ("mlp_onnx", "cnn_with_bn_node_onnx"):
        cached = functools.cache(getattr(factories, name))
        setattr(factories, name, cached)
    factories.mlp_onnx((16, 64, 64, 8))  # the fixtures' arguments (tests/compression/conftest.py)
    factories.cnn_with_bn_node_onnx()


_memoize_model_bytes()


def pytest_collection_modifyitems(session, config, items):  # type: ignore[no-untyped-def]
    """Run a mutant's tests fastest first, so that the small oracle tests kill it early.

    mutmut's fork-server runner hands pytest a mutant's tests in set order (its fork runner sorts them
    by duration; the fork server, which torch needs, does not), so a mutant that the first oracle test
    kills could first run every slow test of its function. The durations are mutmut's own, measured
    in its stats run (mutants/mutmut-stats.json; absent during that run: nothing is reordered).
    """
    import json
    from pathlib import Path

    stats = Path("mutmut-stats.json")
    if stats.is_file():
        duration = json.loads(stats.read_text())["duration_by_test"]
        items.sort(key=lambda item: duration.get(item.nodeid, 0.0))
