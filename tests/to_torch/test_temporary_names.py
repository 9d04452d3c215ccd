"""Temporaries in the generated ``forward`` are always Python identifiers, even when the layer
name left after dropping the model's prefix is only a number (a model named ``ReLU`` with its
layer ``re_lu_1``: the layer matrix's case once wrote ``1 = F.relu(...)``)."""

from __future__ import annotations

import pytest

from pipeline.to_torch.codegen.naming import TemporaryNames, snake


@pytest.mark.parametrize("name", ["1", "_1", "1x1", "__2__", "re_lu_1", "ReLU"])
def test_snake_never_starts_with_a_digit(name: str) -> None:
    text = snake(name)
    assert text.isidentifier(), text


def test_a_numeric_base_still_allocates_an_identifier() -> None:
    names = TemporaryNames()
    first = names.allocate("1", "Relu", 0, 1)
    second = names.allocate("1", "Relu", 0, 2)
    assert first.isidentifier() and second.isidentifier() and first != second
