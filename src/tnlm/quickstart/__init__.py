"""The one-command tour: the built-in corpus (or the user's text) cleaned, a tokenizer trained, token
shards packed, a TransNormer and a Transformer of the same size compared on the same data, seed and tokens
(quality, training speed by sequence length, decoding speed and memory by context), the TransNormer
fine-tuned with LoRA on the shipped chat set, and a summary folder that says where everything is.

    from tnlm.quickstart import Options, quickstart
    quickstart(Options(output="quickstart", minutes=10), log=print)

Each stage is the library call behind a CLI command (`tnlm data run`, `tnlm tokenizer train`, `tnlm data
pack`, `tnlm compare`, `tnlm finetune`); the summary lists them so a user can run each on its own.
"""

from tnlm.quickstart.plan import Options, Scale
from tnlm.quickstart.run import quickstart

__all__ = ["Options", "Scale", "quickstart"]
