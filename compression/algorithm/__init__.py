"""Stage 4, algorithm: one layer's randomized draw: the seeded RNG, scores, the exact (f, p)
choice, greedy pruning at weight/neuron/channel granularity, stochastic quantization, and the
``CompressedWeight`` they produce. May import ``diagnostics``, ``graph`` and ``io``; imported by
``evaluation`` and above.
"""
