"""The ``netshrink`` command: the composition root (the only package that imports everything)."""
