"""``python -m gradtx.app``: the ``gradtx`` console script, run as a module.

Importing ``gradtx.app`` imports the library, and JAX with it, before the
arguments are read; ``gradtx`` and ``python -m gradtx_cli`` answer a bad
argument, ``--help`` and ``--version`` without it.
"""

import sys

from gradtx_cli import main

sys.exit(main())
