"""``python -m gradtx.app``: the ``gradtx`` console script, run as a module."""

import sys

from gradtx.app.cli import main

sys.exit(main())
