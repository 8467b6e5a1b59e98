"""Stage 6, bounds: what the method guarantees: operator norms, the bound tiers E/T/P/W per layer
and end to end, the linearized prediction, the per-layer advice and the stable sampler. May import
``evaluation`` and below; imported by ``search`` and above.
"""
