"""`train(config)`: a whole run, from an empty (or interrupted) run directory to a model directory.

    from tnlm.training import load_train_config, train
    result = train(load_train_config("configs/train/tnl-tiny.yaml", ["data.path=data/packed"]))

The run directory holds config.yaml (the resolved configuration), metrics.jsonl, loss.png,
tensorboard/, checkpoints/step-N/ and, at the end, model/ (a Hugging Face directory with the
tokenizer). With `resume=True` the newest checkpoint is restored (model, optimizer, schedule, loader
position, RNG) and the losses continue exactly as if the run had never stopped.

Under torchrun (`torchrun --nproc_per_node N -m tnlm train CONFIG parallel.dp_shard=N`) every process
runs `train`: they build one device mesh (tnlm.training.parallel), train their shares together, and
save and restore checkpoints together; the first process alone writes the logs, the config and the
final model directory. A checkpoint of any layout resumes in any other.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from tnlm.data.files import write_text_atomic
from tnlm.errors import CheckpointError, ConfigError
from tnlm.training.build import (
    DataInfo,
    build_loaders,
    build_model,
    check_packed_support,
    describe,
    pick_device,
    pick_precision,
    read_data_info,
)  # fmt: skip
from tnlm.training.checkpoint import CheckpointManager, export_checkpoint, export_model
from tnlm.training.config import TrainConfig, differences
from tnlm.training.flops import flops_per_token, peak_flops
from tnlm.training.logs import RunLog
from tnlm.training.optim import build_optimizer, build_schedule
from tnlm.training.parallel import World, init_world
from tnlm.training.parallel.mesh import launch_env
from tnlm.training.parallelize import parallelize
from tnlm.training.trainer import BatchSource, LossFn, Trainer, next_token_loss, seed_everything


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    model_dir: Path
    step: int
    tokens: int
    val_loss: float


class Interrupted(Exception):
    """The run stopped on SIGINT/SIGTERM after saving a checkpoint (not an error: resume it)."""

    def __init__(self, signum: int, *, step: int, checkpoint: Path) -> None:
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        super().__init__(f"{signal.Signals(signum).name} at step {step}; checkpoint saved to {checkpoint}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # 130 for SIGINT, 143 for SIGTERM, as shells report them


def build_trainer(
    config: TrainConfig, *, loss_fn: LossFn = next_token_loss,
    loaders: tuple[BatchSource, BatchSource] | None = None, world: World | None = None,
) -> tuple[Trainer, DataInfo]:
    """The model (seeded, parallelized, on its device), optimizer, schedule and loaders of a run.
    `loss_fn` and `loaders` (train, validation) replace the next-token loss over token shards, e.g.
    for supervised fine-tuning on masked dialogues. `world`: this process's place in a distributed
    run (default: one process)."""
    data = read_data_info(config.data)
    device = world.device if world is not None else pick_device(config.train.device)
    precision = pick_precision(config.train.precision, device)
    seed_everything(config.seed)
    model = build_model(config.model, data=data, seed=config.seed)
    check_packed_support(model, config.data)
    model = parallelize(model.to(device), world, config, precision=precision)
    optimizer = build_optimizer(model, config.optimizer, device=device)
    schedule = build_schedule(optimizer, config.schedule, total_steps=config.train.steps)
    train_loader, val_loader = loaders or _token_loaders(config, world)
    common = dict(model=model, optimizer=optimizer, schedule=schedule, train_loader=train_loader,
                  val_loader=val_loader, device=device, precision=precision, grad_accum=config.train.grad_accum,
                  grad_clip=config.train.grad_clip, loss_fn=loss_fn)  # fmt: skip
    if world is not None and world.distributed:
        from tnlm.training.parallel.trainer import DistributedTrainer

        return DistributedTrainer(world=world, **common), data
    return Trainer(**common), data


def _token_loaders(config: TrainConfig, world: World | None) -> tuple[BatchSource, BatchSource]:
    """Each data-parallel process reads batch_size / dp rows of every global batch (the same rows one
    process would read, in windows mode)."""
    dp = world.size("dp_shard") if world is not None else 1
    rank = world.coordinate("dp_shard") if world is not None else 0
    section = replace(config.data, batch_size=config.data.batch_size // dp)
    return build_loaders(section, seed=config.seed, rank=rank, world_size=dp)


def export_pretrained(model: torch.nn.Module, *, data: DataInfo, run_dir: Path) -> tuple[Path, str]:
    """The end of a run: the model as a Hugging Face directory with its tokenizer; (where, what to try)."""
    model_dir = export_model(model, tokenizer=data.tokenizer, out=run_dir / "model")
    return model_dir, f'try: tnlm generate {model_dir} --prompt "..."'


Build = Callable[[TrainConfig], tuple[Trainer, DataInfo]]
Export = Callable[..., tuple[Path, str]]


def train(config: TrainConfig, *, resume: bool = False, build: Build = build_trainer,
          export: Export = export_pretrained) -> RunResult:  # fmt: skip
    """Run (or, with resume, continue) the training `config` describes; returns where the model went.
    `build` makes the trainer and `export(model, data=, run_dir=)` writes the result (fine-tuning
    passes its own: chat data, adapters); the loop, checkpoints, resume and logs are the same.
    Under torchrun every process calls this (see the module docstring); only pretraining runs there."""
    if build is not build_trainer and launch_env()[2] > 1:
        raise ConfigError(f"{config.command} runs in one process: start it without torchrun (distributed "
                          "training is for `tnlm train`)")  # fmt: skip
    world = init_world(config.parallel, device_setting=config.train.device)
    try:
        return _train(config, world, resume=resume, build=build, export=export)
    finally:
        world.close()


def _train(config: TrainConfig, world: World, *, resume: bool, build: Build, export: Export) -> RunResult:
    run_dir = Path(config.output)
    manager = CheckpointManager(run_dir / "checkpoints", keep=config.checkpoint.keep)
    start = check_run_dir(run_dir, config, manager, resume=resume)
    trainer, data = build_trainer(config, world=world) if world.distributed else build(config)
    world.barrier()  # every process has checked the run directory before it changes
    if world.is_main:
        write_text_atomic(run_dir / "config.yaml", config.to_yaml())
    if start is not None:
        restore(trainer, manager, start, data=data)
    log = RunLog(run_dir, total_steps=config.train.steps, start_step=trainer.step, progress=config.log.progress,
                 tensorboard=config.log.tensorboard, plot=config.log.plot) if world.is_main else QuietLog()  # fmt: skip
    if start is not None:
        log.truncate_after(trainer.step)
    else:
        log.reset()
    if resume and start is None:
        log.note(f"--resume: no checkpoint in {manager.folder}, so the run starts at step 0")
    try:
        header = describe(trainer.model, config) + (f", {world.layout.describe()}" if world.distributed else "")
        return _loop(trainer, config, log=log, manager=manager, data=data, header=header, world=world,
                     export=export)  # fmt: skip
    finally:
        log.close()


class QuietLog:
    """The log of every process but the first: says nothing, writes nothing."""

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None


def _loop(trainer: Trainer, config: TrainConfig, *, log: RunLog, manager: CheckpointManager, data: DataInfo,
          header: str, world: World, export: Export) -> RunResult:  # fmt: skip
    total = config.train.steps
    model = trainer.model
    flops = flops_per_token(_unsharded(model) if world.distributed else model, seq_len=config.data.seq_len)
    dtype = torch.bfloat16 if trainer.precision == "bf16" else torch.float32
    peak, peak_source = peak_flops(trainer.device, dtype=dtype)
    peak *= world.world_size
    log.note(f"{header} on {trainer.device} ({trainer.precision}); {config.tokens_per_step()} tokens/step, "
             f"{data.train_tokens} training tokens; MFU against {peak / 1e9:.1f} GFLOP/s ({peak_source})"
             + (f"; resumed at step {trainer.step}" if trainer.step else ""))  # fmt: skip
    saved = trainer.step if trainer.step else None
    with StopSignals(log.note) as stop:
        while trainer.step < total:
            started = time.perf_counter()
            metrics = trainer.train_step()
            seconds = time.perf_counter() - started
            rate = metrics["step_tokens"] / seconds
            log.step({"step": trainer.step, "loss": metrics["loss"], "grad_norm": metrics["grad_norm"],
                      "lr": metrics["lr"], "tokens": trainer.tokens, "tokens_per_s": rate,
                      "mfu": rate * flops / peak, "time": time.time()})  # fmt: skip
            step = trainer.step
            stopping = world.any(stop.signum is not None)  # every process stops after the same step
            if config.eval.every and step % config.eval.every == 0 and step < total:
                log.validation(step, trainer.validate(batches=config.eval.batches))
            if step % config.checkpoint.every == 0 or stopping:
                saved = save(trainer, manager, data=data, world=world)
            if stopping:
                raise Interrupted(stop.signum or signal.SIGTERM, step=step, checkpoint=manager.path(step))
    log.end_progress()
    if saved != trainer.step:
        save(trainer, manager, data=data, world=world)
    val_loss = trainer.validate(batches=config.eval.batches)
    log.validation(trainer.step, val_loss)
    if world.distributed:
        model_dir, hint = _export_checkpoint(manager.path(trainer.step), data=data, run_dir=Path(config.output),
                                             world=world)  # fmt: skip
    else:
        model_dir, hint = export(model, data=data, run_dir=Path(config.output))
    log.note(f"model saved to {model_dir} ({hint})")
    return RunResult(run_dir=Path(config.output), model_dir=model_dir, step=trainer.step, tokens=trainer.tokens,
                     val_loss=val_loss)  # fmt: skip


def _export_checkpoint(checkpoint: Path, *, data: DataInfo, run_dir: Path, world: World) -> tuple[Path, str]:
    """The end of a distributed run: the first process writes the model directory from the final
    checkpoint (every process's shards) while the others wait."""
    model_dir = run_dir / "model"
    if world.is_main:
        export_checkpoint(checkpoint, model_dir, tokenizer=data.tokenizer)
    world.barrier()
    return model_dir, f'try: tnlm generate {model_dir} --prompt "..."'


def _unsharded(model: torch.nn.Module) -> torch.nn.Module:
    """The plain model of the same config on the meta device (what FLOP counts are made of)."""
    from tnlm.models.registry import FAMILIES

    with torch.device("meta"):
        return FAMILIES[model.config.model_type].model_class(model.config)


def check_run_dir(run_dir: Path, config: TrainConfig, manager: CheckpointManager, *, resume: bool) -> int | None:
    """The step to resume from (None: a fresh start); refuses to mix two runs in one directory."""
    import yaml

    latest = manager.latest()
    config_file = run_dir / "config.yaml"
    if resume and latest is not None:
        saved = yaml.safe_load(config_file.read_text()) if config_file.is_file() else {}
        diffs = differences(saved, config.to_dict())
        if diffs:
            raise ConfigError(
                f"--resume: {run_dir} holds a run with another configuration ({'; '.join(diffs)}). Resume it with "
                f"its own configuration ({config.command} {config_file} --resume), or set output=NEW_DIR for a new run"
            )  # fmt: skip
    elif not resume and (latest is not None or (run_dir / "model").is_dir()):
        what = f"checkpoints up to step {latest}" if latest is not None else "a finished model"
        raise ConfigError(f"{run_dir} already holds a run ({what}): add --resume to continue it, "
                          "or set output=NEW_DIR for a new run")  # fmt: skip
    return latest if resume else None


def save(trainer: Trainer, manager: CheckpointManager, *, data: DataInfo, world: World | None = None) -> int:
    meta = {"model_type": trainer.model.config.model_type, "data": data.fingerprint(), "tokens": trainer.tokens,
            "model_config": trainer.model.config.to_dict(), "tokenizer": str(Path(data.tokenizer).resolve()),
            "layout": vars(world.layout) if world is not None else {"dp_shard": 1, "sp": 1, "tp": 1}}  # fmt: skip
    manager.save(trainer.step, trainer.state_dict(), meta=meta)
    return trainer.step


def restore(trainer: Trainer, manager: CheckpointManager, step: int, *, data: DataInfo) -> None:
    """Load checkpoint `step` into the trainer, in place: every process reads the shards it holds now,
    whatever layout wrote them."""
    meta = manager.meta(step)
    path = manager.path(step)
    model_type = trainer.model.config.model_type
    if meta.get("model_type") != model_type:
        raise CheckpointError(f"{path} holds a {meta.get('model_type')} model, not {model_type}: "
                              "set output=NEW_DIR to train this model in a new run")  # fmt: skip
    if meta.get("data") != data.fingerprint():
        raise CheckpointError(f"{path} was trained on other data ({meta.get('data')}, now {data.fingerprint()}): "
                              "point data.path at the run's own shards")  # fmt: skip
    state = trainer.state_dict()
    manager.load_into(step, state)
    try:
        trainer.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError) as e:
        raise CheckpointError(f"{path} does not fit this model or optimizer: {str(e).splitlines()[0]}") from None


class StopSignals:
    """SIGINT and SIGTERM ask the loop to stop after the current step and save a checkpoint; a second
    SIGINT stops at once (the checkpoints written so far stay intact)."""

    def __init__(self, note) -> None:
        self.note = note
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        self.note(f"{signal.Signals(signum).name}: stopping after this step to save a checkpoint "
                  "(Ctrl-C again quits without saving)")  # fmt: skip

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
