"""``python -m specsched.cli``: the ``specsched`` command."""

import sys

from specsched.cli import main

sys.exit(main())
