"""One-line errors name the cause, also for TensorFlow's and Keras's multi-line messages.

The messages below are TensorFlow 2.x / Keras 3 messages as they come (copied from real
errors, escape codes included); ``tests/export/test_worker_errors.py`` gets one from a real
TF worker.
"""

from __future__ import annotations

import pytest

from pipeline.core.messages import MAX_CHARS, cause_of, one_line

TF_FUNCTION = (
    "in user code:\n\n"
    '    File "/tmp/m.py", line 4, in f  *\n'
    "        return tf.matmul(x, tf.ones((4, 5)))\n\n"
    "    ValueError: Dimensions must be equal, but are 3 and 4 for '{{node MatMul}} = "
    "MatMul[T=DT_FLOAT](x, ones)' with input shapes: [2,3], [4,5].\n"
)
KERAS_LAYER_IN_TF_FUNCTION = (
    "in user code:\n\n"
    '    File "/tmp/m.py", line 30, in h  *\n'
    "        return L2()(x)\n"
    '    File "/site-packages/keras/src/utils/traceback_utils.py", line 122, in error_handler  **\n'
    "        raise e.with_traceback(filtered_tb) from None\n\n"
    "    ValueError: Exception encountered when calling L2.call().\n    \n"
    "    \x1b[1mexpected 4 features, got 3\x1b[0m\n    \n"
    "    Arguments received by L2.call():\n"
    "      \u2022 x=tf.Tensor(shape=(2, 3), dtype=float32)\n"
)
KERAS_SYMBOLIC = (
    "Exception encountered when calling L.call().\n\n"
    "\x1b[1mCould not automatically infer the output shape / dtype of 'l' (of type L). "
    "Error encountered:\n\nDimensions must be equal, but are 3 and 4 for '{{node MatMul}}' "
    "with input shapes: [?,3], [4,5].\x1b[0m\n\n"
    "Arguments received by L.call():\n"
    "  \u2022 args=('<KerasTensor shape=(None, 3), dtype=float32>',)\n"
)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            TF_FUNCTION,
            "ValueError: Dimensions must be equal, but are 3 and 4 for '{{node MatMul}} = "
            "MatMul[T=DT_FLOAT](x, ones)' with input shapes: [2,3], [4,5].",
        ),
        (KERAS_LAYER_IN_TF_FUNCTION, "expected 4 features, got 3"),
        (
            KERAS_SYMBOLIC,
            "Dimensions must be equal, but are 3 and 4 for '{{node MatMul}}' with input "
            "shapes: [?,3], [4,5].",
        ),
        ("file not found: x.keras", "file not found: x.keras"),
        ("first line\nsecond line", "first line"),
        (
            "Constraints violated (batch)!:\n  guard 2 <= batch",
            "Constraints violated (batch)!: guard 2 <= batch",
        ),
        ("", ""),
    ],
)
def test_cause_of(message: str, expected: str) -> None:
    assert cause_of(message) == expected


def test_one_line_keeps_the_inner_error_type_and_drops_escapes() -> None:
    assert one_line(ValueError(TF_FUNCTION)).startswith("ValueError: Dimensions must be equal")
    assert one_line(ValueError(KERAS_LAYER_IN_TF_FUNCTION)) == (
        "ValueError: expected 4 features, got 3"
    )
    assert one_line(RuntimeError(KERAS_SYMBOLIC)).startswith("RuntimeError: Dimensions must")
    assert "\x1b" not in one_line(ValueError(KERAS_SYMBOLIC))
    assert one_line(KeyError()) == "KeyError"


def test_one_line_is_one_bounded_line() -> None:
    text = one_line(ValueError("x" * 1000 + "\nmore"))
    assert "\n" not in text and len(text) == MAX_CHARS and text.endswith("...")
