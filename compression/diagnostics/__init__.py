"""Stage 3, diagnostics: heavy-tail estimates (alpha-hat, q(eps)), compressibility curves and the
per-layer diagnostics of a network, without compressing anything. May import ``graph`` and ``io``;
imported by ``report`` and the pipeline.
"""
