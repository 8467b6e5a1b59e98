"""Heavy-tailed-noise fine-tuning (P3, docs/method.md §4): the ``finetune`` job kind.

A stage above ``pipeline`` (its optional follow-up compress calls ``pipeline.compress``):
``spec`` (what to train) -> ``data`` (training/validation arrays) -> ``checks`` (refusals before
training) -> ``train`` (plain SGD/Adam steps, ``noise`` after each one) -> ``prunability`` (the
neuron/channel prune curve at ≤ tol points) -> ``writeback`` (the trained weights in the upload's own
format) -> ``job.finetune`` (both arms, the report section, the artifacts).
"""
