"""Commands that need TensorFlow fail cleanly without the ``tf`` extra (exit 2, one line).

TensorFlow is made absent in a subprocess the way Python sees an uninstalled package
(``sys.modules[name] = None`` makes both ``import`` and ``find_spec`` report it missing);
the slow ``test_base_install.py`` proves the same on a real environment built without it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core.errors import MissingExtraError, Tf2TorchError
from pipeline.core.extras import missing_modules, require_tensorflow

REPO = Path(__file__).resolve().parents[2]
ZOO = REPO / "models" / "zoo.py"

WITHOUT_TF = (
    "import sys\n"
    "for name in ('tensorflow', 'tf2onnx', 'keras'):\n"
    "    sys.modules[name] = None\n"
    "from pipeline.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def _cli_without_tf(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_TF, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_missing_modules_finds_absent_ones() -> None:
    assert missing_modules(("json", "no_such_module_tf2torch")) == ["no_such_module_tf2torch"]


def test_require_tensorflow_passes_here() -> None:
    # The development environment has the extra; the check must not refuse it.
    require_tensorflow("test")


@pytest.mark.parametrize(
    "args",
    [
        ["convert", f"{ZOO}:dense_relu", "-o", "out"],
        ["check", "some_run"],
        ["diff", "some_run"],
        ["demo", "-o", "out"],
    ],
    ids=["convert", "check", "diff", "demo"],
)
def test_tf_commands_exit_2_naming_the_extra(args: list[str], tmp_path: Path) -> None:
    proc = _cli_without_tf(args, tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "pip install 'tf2torch[tf]'" in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_migrate_without_tf_exits_2(tmp_path: Path) -> None:
    manifest = tmp_path / "m.toml"
    manifest.write_text(f'[[models]]\nname = "a"\nsource = "{ZOO}:dense_relu"\n')
    proc = _cli_without_tf(["migrate", str(manifest), "-o", "out"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "tf2torch[tf]" in proc.stderr and "Traceback" not in proc.stderr


def test_api_convert_raises_missing_extra(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "sys.modules['tensorflow'] = None\n"
        "import pipeline\n"
        "from pipeline.core.errors import MissingExtraError\n"
        "try:\n"
        f"    pipeline.convert({str(ZOO) + ':dense_relu'!r}, {str(tmp_path / 'out')!r})\n"
        "except MissingExtraError as err:\n"
        "    print('refused:', err)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("refused: convert needs TensorFlow (tensorflow not installed)")
    assert not (tmp_path / "out").exists()
    assert issubclass(MissingExtraError, Tf2TorchError)
