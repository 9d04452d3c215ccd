"""Join the summaries of 'migrate --shard K/N' runs into one summary and one JUnit file.

Each SHARD_DIR is the output root of one shard (e.g. a CI matrix job's downloaded
artifact).  The shards must be all N shards of one manifest, each once, each complete;
otherwise nothing is written and the error names the shard that is missing, given twice,
unfinished or from another manifest.  OUT/summary.json lists every model in manifest order
(run directories pointing into the shard directories) and OUT/junit.xml has a test case per
model.

Exit codes: 0 every model passed, 1 a model failed, errored or timed out, 2 the shards do not
fit together.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pipeline.core.console import make_console
from pipeline.migration import merge_shards


def add_parser(subparsers: Any, help: str, description: str) -> None:
    """Register ``tf2torch migrate-merge``."""
    p = subparsers.add_parser(
        "migrate-merge",
        help=help,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("shard_dirs", type=Path, nargs="+", metavar="SHARD_DIR", help="shard roots")
    p.add_argument(
        "-o", "--out", type=Path, required=True, metavar="OUT", help="where the merge is written"
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``tf2torch migrate-merge``; returns 0 when every model passed, 1 otherwise."""
    result = merge_shards(args.shard_dirs, args.out)
    counts = ", ".join(f"{n} {v}" for v, n in result.counts.items() if n) or "no models"
    make_console().print(
        f"{counts}; summary: {result.summary_path}; JUnit: {result.junit_path}", markup=False
    )
    return result.exit_code
