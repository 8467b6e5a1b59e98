"""Stage 7, search: whole-network draws and the choice between them: best-of-R greedy draws
over layers, the measurement of a draw against its bounds, and the budget search. Separate from
``algorithm`` because it needs ``evaluation`` and ``bounds``, which themselves need one layer's draw.
May import ``bounds`` and below; imported by ``export`` and above.
"""
