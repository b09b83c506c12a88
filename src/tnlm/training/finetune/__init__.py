"""Supervised fine-tuning on dialogues (loss on every answer), full or LoRA through peft.

    from tnlm.training.finetune import finetune, load_finetune_config
    result = finetune(load_finetune_config("configs/finetune/pydoc-chat.yaml", ["model.name=runs/tnl-tiny/model"]))

dialogues.py reads and checks chat data; samples.py turns dialogues into masked samples (split at turn
boundaries, or one per answer); loader.py batches them (packed with cu_seqlens, or padded); tokens.py fits
the chat markers into the tokenizer and the embedding; lora.py applies, saves and merges adapters;
build.py puts it together on `tnlm.training.run.train`'s loop.
"""

from tnlm.training.config import FinetuneConfig, load_finetune_config
from tnlm.training.finetune.build import finetune
from tnlm.training.finetune.lora import load_adapter, merge_lora

__all__ = ["FinetuneConfig", "finetune", "load_adapter", "load_finetune_config", "merge_lora"]
