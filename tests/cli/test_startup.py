"""The light commands stay light: `tnlm --help`, `--version` and every command's help import neither
torch nor transformers (checked in a fresh interpreter through sys.modules, not by timing)."""

import subprocess
import sys

from tnlm.cli.main import COMMANDS

HEAVY = ("torch", "transformers", "tokenizers", "datasets", "datatrove")

LIGHT_CALLS = [["--help"], ["--version"], ["data", "steps"]] + [[name, "--help"] for name, _ in COMMANDS]

PROBE = """
import sys
from tnlm.cli.main import app
heavy = {heavy!r}
for args in {calls!r}:
    try:
        app(args, prog_name="tnlm")
    except SystemExit:
        pass
    loaded = [m for m in heavy if m in sys.modules]
    if loaded:
        print("HEAVY", args, loaded, file=sys.stderr)
        sys.exit(1)
"""


def test_help_version_and_light_commands_import_no_torch():
    code = PROBE.format(heavy=HEAVY, calls=LIGHT_CALLS)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Usage" in proc.stdout and "tnlm 0.1.0" in proc.stdout


def test_import_tnlm_is_light_and_model_functions_load_lazily():
    code = (
        "import sys, tnlm\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'import tnlm is heavy'\n"
        "assert tnlm.preset_names()[0]\n"
        "from transformers import AutoConfig\n"
        "print(type(AutoConfig.for_model('transnormer')).__name__)\n"  # registered by loading tnlm.models
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "TransnormerConfig"


def test_a_missing_model_directory_fails_before_torch_is_imported(tmp_path):
    """generate, chat and serve check a MODEL that names a path before the heavy imports."""
    (tmp_path / "file").write_text("{}")
    calls = [[cmd, str(tmp_path / "no-such-model")] + (["hi"] if cmd == "generate" else []) for cmd in ("generate", "chat", "serve")]
    calls.append(["generate", str(tmp_path / "file"), "hi"])
    code = PROBE.format(heavy=HEAVY, calls=calls).replace("    except SystemExit:", "    except Exception as e:\n        print(type(e).__name__, e)\n    except SystemExit:")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("CheckpointError model directory") == 4 and "is a file, not a model directory" in proc.stdout
