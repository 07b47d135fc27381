"""``python -m gradtx_cli``: the ``gradtx`` console script, run as a module."""

import sys

from gradtx_cli import main

sys.exit(main())
