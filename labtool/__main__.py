"""``python -m labtool ...`` is the same as the ``labtool`` command."""

import sys

from labtool.cli import main

sys.exit(main())
