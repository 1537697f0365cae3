"""``python -m evalpipe`` is the ``evalpipe`` command."""

import sys

from evalpipe.cli import main

sys.exit(main())
