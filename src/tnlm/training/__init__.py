"""Pretraining: config + overrides, the training step, checkpoints with exact resume, logs.

    from tnlm.training import load_train_config, train
    result = train(load_train_config("configs/train/tnl-tiny.yaml", ["data.path=data/packed"]))
"""

from tnlm.training.config import TrainConfig, load_train_config
from tnlm.training.run import Interrupted, RunResult, train

__all__ = ["Interrupted", "RunResult", "TrainConfig", "load_train_config", "train"]
