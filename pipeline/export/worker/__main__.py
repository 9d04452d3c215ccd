"""``python -m pipeline.export.worker REQUEST.json``: the export worker's entry point."""

import sys

from pipeline.export.worker.serve import main

sys.exit(main())
