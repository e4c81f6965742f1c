"""``python -m labtool ...`` is the same as the ``labtool`` command (``client.py``)."""

import sys

from labtool.client import main

sys.exit(main())
