"""Stage 8, export: artifacts on disk: physical removal of pruned units, quantized ONNX and state
dicts, their storage accounting, and the artifact set of a job. May import ``search`` and below;
imported by ``report`` and the pipeline.
"""
