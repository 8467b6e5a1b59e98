"""Stage 9, report: the report JSON (versioned schemas in ``schemas/``), its assembly and the
provenance it records. May import every stage below; imported only by the top-level ``pipeline``.
"""
