"""One line out of an exception: the part of its message that names the cause.

Most Python errors say what went wrong on their first line.  TensorFlow and Keras do not:

- a ``tf.function`` error starts with ``in user code:``, then a traceback of the user's
  frames, and names the cause on its last line (``ValueError: Dimensions must be equal ...``);
- a Keras layer error starts with ``Exception encountered when calling L.call().`` and
  highlights the cause in bold (ANSI ``ESC[1m ... ESC[0m``), followed by ``Arguments received
  by ...`` and one bullet per argument.

:func:`one_line` finds that cause; the whole message stays in the worker's log.
"""

from __future__ import annotations

import re

MAX_CHARS = 300
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_BOLD = re.compile(r"\x1b\[1m(.*?)\x1b\[0m", re.DOTALL)
_ERROR_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Exit|Interrupt): ")
_NOISE = ("Arguments received by", "•", "File ", "Traceback (most recent call last)")


def _lines(text: str) -> list[str]:
    return [" ".join(line.split()) for line in text.splitlines() if line.strip()]


def _last_cause(lines: list[str]) -> str | None:
    """The last line that is neither a traceback frame nor Keras's argument listing."""
    for line in reversed(lines):
        if not line.startswith(_NOISE):
            return line
    return None


def cause_of(message: str) -> str:
    """The line of ``message`` that names the cause (see the module docstring); the first
    line for an ordinary message.  ANSI escapes are dropped and whitespace collapsed."""
    bold = [m for m in _BOLD.findall(message) if m.strip()]
    if bold:
        # Keras's highlighted cause; its last line is the innermost one ("Error encountered:
        # <the TF error>").
        lines = _lines(_ANSI.sub("", bold[-1]))
        if lines:
            return lines[-1]
    plain = _ANSI.sub("", message)
    lines = _lines(plain)
    if not lines:
        return ""
    if lines[0].rstrip(":") == "in user code":
        # tf.function: frames, then the error; the last "XError: ..." line is the cause, unless
        # Keras wrapped it ("Exception encountered when calling ..."): then what follows it.
        for index in range(len(lines) - 1, -1, -1):
            if _ERROR_LINE.match(lines[index]):
                if "Exception encountered when calling" in lines[index]:
                    after = [ln for ln in lines[index + 1 :] if not ln.startswith(_NOISE)]
                    if after:
                        return after[0]
                return lines[index]
        cause = _last_cause(lines)
        return cause if cause is not None else lines[-1]
    if lines[0].endswith(":") and len(lines) > 1:
        # A heading ("Constraints violated (batch)!:" and the like): say what follows too.
        return f"{lines[0]} {lines[1]}"
    return lines[0]


def one_line(err: BaseException, limit: int = MAX_CHARS) -> str:
    """``"<ErrorType>: <cause>"`` in one line of at most ``limit`` characters.

    The cause is :func:`cause_of` the message; when it already starts with an error type
    (``ValueError: ...`` from inside a ``tf.function``) that type is the one shown.
    """
    cause = cause_of(str(err))
    text = cause if _ERROR_LINE.match(cause) else f"{type(err).__name__}: {cause}"
    text = text.rstrip(": ").rstrip()
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."
