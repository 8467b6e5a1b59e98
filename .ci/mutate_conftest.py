# ---- appended by .ci/mutate to the copy under build/mutate only (source: .ci/mutate_conftest.py) ----
# mutmut forks one process per mutant from a fork server that has collected the tests (imported this
# file); what is computed here once is shared by every mutant's process. None of it changes what a
# test checks.


def _memoize_model_bytes() -> None:
    """The ONNX bytes of the fixtures' models, exported once in the fork server.

    ``torch.onnx.export`` costs seconds; each mutant's pytest session would re-export them for
    ``mlp_net``/``cnn_net`` and test_dag's ``nets`` (three trained CNNs). The bytes come from torch,
    ``tests.factories`` and ``tests.dag_models`` alone (no mutated module), so every mutant would get
    the same bytes anyway.
    """
    import functools

    from tests import dag_models, factories

    for name in ("mlp_onnx", "cnn_with_bn_node_onnx"):
        cached = functools.cache(getattr(factories, name))
        setattr(factories, name, cached)
    factories.mlp_onnx((16, 64, 64, 8))  # the fixtures' arguments (tests/compression/conftest.py)
    factories.cnn_with_bn_node_onnx()
    # the three small trained CNNs of tests/dag_models.py (``onnx_bytes`` is lru-cached there): 25 Adam
    # steps and an export each, 3.4 s of fixture setup for every mutant that reaches test_dag.py
    for name in dag_models.BUILDERS:
        dag_models.onnx_bytes(name)


_memoize_model_bytes()


def _check_the_report_schema_once() -> None:
    """``jsonschema.validate`` checks the schema itself against the 2020-12 meta-schema on every call
    (0.09 s a check measured unloaded, three per mutant that reaches test_report.py). The schema is
    package data, not a mutated module: a schema that passed its check once passes it again. A
    failing check still raises.
    """
    import json

    import jsonschema

    cls = jsonschema.Draft202012Validator
    check = cls.check_schema
    passed: set[str] = set()

    def check_schema(schema, *args, **kwargs):  # type: ignore[no-untyped-def]
        if args or kwargs:  # a format checker given: not memoized
            return check(schema, *args, **kwargs)
        key = json.dumps(schema, sort_keys=True)
        if key not in passed:
            check(schema)
            passed.add(key)

    cls.check_schema = staticmethod(check_schema)  # type: ignore[method-assign]


_check_the_report_schema_once()


def pytest_collection_finish(session):  # type: ignore[no-untyped-def]
    """Freeze what the fork server holds after its warm-up collection (``gc.freeze``).

    pytest's unraisable-exception plugin runs ``gc.collect()`` several times as each mutant's session
    ends; in a child forked from a server that holds torch, onnx and every test module, each of those
    walked the whole inherited heap and touched every page (copy-on-write). Frozen objects are never
    collected (the server's are alive for its whole life anyway); what a test allocates still is.
    """
    import gc

    gc.freeze()


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
