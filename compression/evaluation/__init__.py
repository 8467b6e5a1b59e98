"""Stage 5, evaluation: running networks and measuring errors: the torch executor of ONNX graphs,
held-out and fit splits, the error metrics and the onnxruntime re-checks. May import the stages below
(``algorithm`` and down); imported by ``bounds`` and above.
"""
