"""The child process that converts one model of a migration (its own process group)."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.core.errors import Tf2TorchError
from pipeline.migration.results import _write_json

# --------------------------------------------------------------------------- the child


def _options_from_settings(settings: Mapping[str, Any]) -> Any:
    from pipeline.api import ConvertOptions
    from pipeline.export.inputs import parse_input_specs

    options = ConvertOptions()
    for key, value in settings.items():
        if key == "inputs":
            options.inputs = Path(value)
        elif key == "input_ranges":
            options.input_ranges = {k: (int(v[0]), int(v[1])) for k, v in value.items()}
        elif key == "input_specs":
            options.input_specs = parse_input_specs(value)
        elif key == "output_tolerances":
            options.output_tolerances = {k: (float(v[0]), float(v[1])) for k, v in value.items()}
        elif key == "patches":
            options.patches = [Path(p) for p in value]
        elif key == "unsafe":
            options.safe_mode = not value
        else:
            setattr(options, key, value)
    return options


def _exit_with_parent() -> None:
    """Kill this process group (with the TF worker) if the migration process goes away."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os.killpg(0, signal.SIGKILL)

    threading.Thread(target=watch, daemon=True).start()


def child_main(request_path: str) -> int:
    """Entry point of the per-model process: convert one model, answer in a JSON file.

    Stage names go to stdout as JSON lines; everything else this process prints goes to
    stderr (the model's log).
    """
    request = json.loads(Path(request_path).read_text())
    events = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    _exit_with_parent()

    def emit(stage: str) -> None:
        events.write(json.dumps({"stage": stage}) + "\n")
        events.flush()

    try:
        from pipeline.export.client import prestart_tf_worker

        prestart_tf_worker()  # TensorFlow's import in the worker overlaps torch's below
        from pipeline.api import convert

        result = convert(
            request["source"],
            request["run_dir"],
            _options_from_settings(request["settings"]),
            on_stage=emit,
        )
        answer: dict[str, Any] = {"ok": True, "verdict": result.verdict}
    except Tf2TorchError as err:
        answer = {"ok": False, "kind": err.kind, "message": str(err)}
    except Exception as err:
        traceback.print_exc()
        answer = {"ok": False, "kind": "internal", "message": f"{type(err).__name__}: {err}"}
    _write_json(Path(request["answer"]), answer)
    return 0


_CHILD_CODE = (
    "import sys; from pipeline.migration import child_main; sys.exit(child_main(sys.argv[1]))"
)
