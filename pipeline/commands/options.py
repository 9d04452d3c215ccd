"""Options several commands share: tolerances, and how the TensorFlow model is loaded."""

from __future__ import annotations

from typing import Any

from pipeline.core.errors import BadInputError


def add_tolerance_options(p: Any, default: str, target: str = "OUTPUT") -> None:
    """``--atol``, ``--rtol`` and repeatable ``--output-tol TARGET=ATOL:RTOL``; ``default``
    says what applies when they are not given."""
    p.add_argument(
        "--atol", type=float, help=f"absolute tolerance for every output (default: {default})"
    )
    p.add_argument(
        "--rtol", type=float, help=f"relative tolerance for every output (default: {default})"
    )
    p.add_argument(
        "--output-tol",
        action="append",
        default=[],
        metavar=f"{target}=ATOL:RTOL",
        help=f"tolerance for one {target.lower()}; repeatable",
    )


def add_tf_loading_options(p: Any) -> None:
    """``--custom-objects``, ``--unsafe``, ``--input-spec`` and ``--worker-timeout``."""
    p.add_argument(
        "--custom-objects",
        metavar="MODULE",
        help="module (file.py or package.module) defining the model's custom layers",
    )
    p.add_argument(
        "--unsafe",
        action="store_true",
        help="load Keras files with safe_mode off (only for files you trust)",
    )
    p.add_argument(
        "--input-spec",
        action="append",
        default=[],
        metavar="NAME=DTYPE[DIMS]",
        help="input signature when the model has none, e.g. x=float32[None,28,28,1]; "
        "repeatable, in input order",
    )
    p.add_argument(
        "--worker-timeout",
        type=float,
        metavar="SECONDS",
        help="give up on the TensorFlow worker after this long (default: no limit)",
    )


def parse_output_tolerances(items: list[str]) -> dict[str, tuple[float, float]]:
    """``["logits=1e-4:1e-3"]`` → ``{"logits": (1e-4, 1e-3)}``; BadInputError when malformed."""
    tolerances = {}
    for item in items:
        name, eq, values = item.partition("=")
        atol, colon, rtol = values.partition(":")
        try:
            if not (name and eq and colon):
                raise ValueError
            tolerances[name] = (float(atol), float(rtol))
        except ValueError:
            raise BadInputError(
                f"bad --output-tol {item!r}: expected OUTPUT=ATOL:RTOL, e.g. logits=1e-4:1e-3"
            ) from None
    return tolerances
