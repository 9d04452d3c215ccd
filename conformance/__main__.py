"""``python -m conformance``: see :mod:`conformance.run`."""

import sys

from conformance.run import main

sys.exit(main())
