"""``python -m pipeline`` is the ``tf2torch`` command line."""

from pipeline.cli import console_main

console_main()
