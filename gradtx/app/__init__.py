"""The ``gradtx`` command-line application, built on the library and kept apart from it.

:mod:`gradtx_cli` parses the command line before JAX is imported (it sits
outside this package, whose import loads the library and JAX);
:mod:`gradtx.app.cli` runs the commands (``gradtx compare``, ``gradtx search``),
:mod:`gradtx.app.race` runs the optimizers and tunes their rates, and
:mod:`gradtx.app.problems` holds the problems they run on. The library never
imports this package; ``import gradtx`` does not load it (its problems may need
optional packages such as scikit-learn). Run it as ``gradtx`` (the console
script), ``python -m gradtx_cli`` or ``python -m gradtx.app`` (which imports JAX
before it reads the arguments).
"""
