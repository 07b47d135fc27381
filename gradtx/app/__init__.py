"""The ``gradtx`` command-line application, built on the library and kept apart from it.

:mod:`gradtx.app.cli` parses the command line (``gradtx compare``, ``gradtx
search``), :mod:`gradtx.app.race` runs the optimizers and tunes their rates, and
:mod:`gradtx.app.problems` holds the problems they run on. The library never
imports this package; ``import gradtx`` does not load it (its problems may need
optional packages such as scikit-learn). Run it as ``gradtx`` (the console
script) or ``python -m gradtx.app``.
"""
