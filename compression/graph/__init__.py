"""Stage 2, graph: from a parsed file to the core's ``Network``: producer/consumer indices, canonical
forms, BatchNorm folding, the graph reader that decides full or generic support, ``load_model`` and the
calibration inputs matched to the network. May import ``io``; imported by every stage above.
"""
