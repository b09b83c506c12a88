import subprocess
import sys

from typer.testing import CliRunner

from tnlm.cli.main import app

runner = CliRunner()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and "tnlm 0.1.0" in result.output


def test_info_preset_reports_counts_and_memory():
    result = runner.invoke(app, ["info", "tnl-385m"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "398,984,192" in result.output and "0.399B" in result.output
    assert "333,448,192" in result.output  # without the (tied) embedding
    assert "1.49 GiB / 0.74 GiB" in result.output


def test_info_forward_pass_on_tiny():
    result = runner.invoke(app, ["info", "tnl-tiny", "--forward", "--seq-len", "16"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "logits (1, 16, 8192)" in result.output


def test_info_model_directory(tmp_path):
    from tnlm.models.registry import create_model

    create_model("tnl-tiny", seed=0).save_pretrained(tmp_path)
    result = runner.invoke(app, ["info", str(tmp_path)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "1,917,056" in result.output


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "info" in result.output


def test_user_error_is_one_line_without_traceback():
    """The console script's own exit path (`python -m tnlm`) on an error; which errors give which line
    is tests/cli/test_misuse.py's (in-process, `info tnl-nope` among them). A usage error fails before
    torch is imported, so this takes a second, not the seconds of loading the model libraries."""
    proc = subprocess.run(
        [sys.executable, "-m", "tnlm", "info", "tnl-tiny", "--forward", "--seq-len", "0"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "'--seq-len'" in proc.stderr
