"""Shared test set-up.

TensorFlow must never be imported in the pytest process: importing torchvision (pulled in
by onnx2torch) after TensorFlow segfaults with the pinned versions.  All TensorFlow work in
tests goes through the TF worker or another subprocess.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _no_tensorflow_in_test_process() -> Iterator[None]:
    yield
    assert "tensorflow" not in sys.modules, "a test imported TensorFlow in the pytest process"
