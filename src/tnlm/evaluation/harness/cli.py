"""`tnlm-lm-eval`: lm-evaluation-harness's own command line with the `tnlm` model registered.

The harness's CLI has no plugin hook, so this entry point registers the model and then hands over:

    tnlm-lm-eval --model tnlm --model_args pretrained=DIR --tasks piqa,arc_easy --tnlm-data-dir data/eval
    tnlm-lm-eval --model hf --model_args pretrained=LLAMA_DIR,dtype=float32 --tasks piqa --tnlm-data-dir data/eval

Every other argument is the harness's own (`lm-eval run --help`). With `--tnlm-data-dir DIR`, the
tasks of `--tasks` that tnlm knows are read from the original files under DIR through local task
YAMLs (written to a temporary folder given to the harness as --include_path), and the Hugging Face
libraries are put offline unless HF_DATASETS_OFFLINE / HF_HUB_OFFLINE are set: nothing is downloaded.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from tnlm.errors import TnlmError

DATA_DIR_FLAG = "--tnlm-data-dir"


def _pop_flag(argv: list[str], flag: str) -> tuple[str | None, list[str]]:
    out, value, i = [], None, 0
    while i < len(argv):
        if argv[i] == flag and i + 1 < len(argv):
            value, i = argv[i + 1], i + 2
            continue
        if argv[i].startswith(flag + "="):
            value = argv[i].split("=", 1)[1]
        else:
            out.append(argv[i])
        i += 1
    return value, out


def split_tasks(argv: list[str]) -> tuple[list[str], list[str]]:
    """(the task names after --tasks / -t, space- or comma-separated; argv without them)."""
    names, rest, i = [], [], 0
    while i < len(argv):
        if argv[i] in ("--tasks", "-t"):
            i += 1
            while i < len(argv) and not argv[i].startswith("-"):
                names += argv[i].split(",")
                i += 1
            continue
        if argv[i].startswith("--tasks="):
            names += argv[i].split("=", 1)[1].split(",")
        else:
            rest.append(argv[i])
        i += 1
    return [n.strip() for n in names if n.strip()], rest


def _local_tasks(data_dir: str, argv: list[str], out_dir: str) -> list[str]:
    """Write YAMLs for the requested tasks tnlm knows; the others are left to the harness."""
    from tnlm.evaluation.harness.tasks import write_harness_tasks
    from tnlm.evaluation.tasks import TaskDataError, resolve_task

    if any(a == "--include_path" or a.startswith("--include_path=") for a in argv):
        raise TnlmError(f"{DATA_DIR_FLAG} sets --include_path itself; pass only one of them")
    names, rest = split_tasks(argv)
    if not names:
        raise TnlmError("no --tasks given")
    final = []
    for name in names:
        try:
            resolve_task(name, Path(data_dir))
        except TaskDataError as e:
            if str(e).startswith("unknown task"):
                final.append(name)  # one of the harness's own tasks
                continue
            raise
        final += write_harness_tasks(data_dir, out_dir, [name])  # the harness's name for it
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return [*rest, "--tasks", ",".join(final), "--include_path", out_dir]


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    data_dir, argv = _pop_flag(argv, DATA_DIR_FLAG)
    import tnlm.evaluation.harness  # noqa: F401  (registers "tnlm" after the built-in backends)
    from lm_eval.__main__ import cli_evaluate

    out_dir = tempfile.mkdtemp(prefix="tnlm-lm-eval-") if data_dir else None
    try:
        if data_dir:
            argv = _local_tasks(data_dir, argv, out_dir)
        sys.argv = ["lm-eval", *argv]
        cli_evaluate()
    except TnlmError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    finally:
        if out_dir:
            shutil.rmtree(out_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
