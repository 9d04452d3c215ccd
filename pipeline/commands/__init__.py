"""One module per ``tf2torch`` sub-command; each module's docstring is its ``--help`` text.

A command module provides ``add_parser(subparsers, help=..., description=...)`` which
registers its options and sets ``run`` (``args -> exit code``) as the parser default.
"""
