"""`python -m tnlm ...` runs the `tnlm` command (torchrun launches it this way)."""

from tnlm.cli import run

run()
