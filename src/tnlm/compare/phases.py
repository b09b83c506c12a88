"""The phases of a comparison, each keeping its numbers in `results/` so that a rerun skips what is done:
training (through `tnlm.training.train`, resuming an interrupted run from its checkpoint), evaluation
(validation perplexity; multiple-choice tasks when their data is given), speed and samples. A phase whose
settings changed since its numbers were written runs again."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tnlm.compare.config import EvalSettings, ModelEntry, SampleSettings, SpeedSettings
from tnlm.data.files import write_json_atomic
from tnlm.models.checkpoint import quiet_transformers
from tnlm.training.config import TrainConfig

Log = Callable[[str], None]
PPL_BATCH = 8  # windows per forward pass when scoring the validation split


def load_trained(config: TrainConfig) -> Any:
    """The EvalModel (weights and tokenizer) of a finished run."""
    from tnlm.evaluation import load_eval_model

    with quiet_transformers():
        return load_eval_model(Path(config.output) / "model")


def read_result(path: Path, settings: Any = None) -> dict | None:
    """A phase's saved numbers, if they were made with these settings."""
    if not path.is_file():
        return None
    saved = json.loads(path.read_text(encoding="utf-8"))
    if settings is not None and saved.get("settings") != json.loads(json.dumps(settings)):
        return None
    return saved


def train_model(entry: ModelEntry, config: TrainConfig, *, results: Path, log: Log) -> dict:
    """Train one model (or continue its interrupted run); its summary in results/NAME.train.json."""
    from tnlm.training import train
    from tnlm.training.checkpoint import CheckpointManager

    path = results / f"{entry.name}.train.json"
    if (done := read_result(path)) is not None:
        log(f"{entry.name}: trained already ({done['steps']} steps), kept")
        return done
    start = time.perf_counter()
    resume = CheckpointManager(Path(config.output) / "checkpoints", keep=config.checkpoint.keep).latest() is not None
    result = train(config, resume=resume)
    record = {"steps": result.step, "tokens": result.tokens, "val_loss": result.val_loss,
              "model_dir": str(result.model_dir), "wall_s": time.perf_counter() - start, "resumed": resume}  # fmt: skip
    write_json_atomic(path, record)
    return record


def evaluate_model(entry: ModelEntry, config: TrainConfig, settings: EvalSettings, *, results: Path,
                   log: Log) -> dict:  # fmt: skip
    """Perplexity of the trained model on the validation split, in the windows it trained on (the same
    windows for every family), and the multiple-choice tasks; results/NAME.eval.json."""
    from tnlm.evaluation import EvalOptions, perplexity, run_evaluation
    from tnlm.evaluation.sources import read_documents

    path = results / f"{entry.name}.eval.json"
    fingerprint = {**asdict(settings), "window": config.data.seq_len}
    if (done := read_result(path, fingerprint)) is not None:
        return done
    start = time.perf_counter()
    model = load_trained(config)
    docs = list(read_documents(config.data.path, split="val"))
    ppl = perplexity(model, docs, mode="window", window=config.data.seq_len, batch_size=PPL_BATCH, progress=False)
    record: dict[str, Any] = {"settings": fingerprint, "val_loss": ppl.nll / ppl.tokens, "val_tokens": ppl.tokens,
                              "val_documents": ppl.documents, **ppl.metrics(), "tasks": []}  # fmt: skip
    if settings.tasks and settings.data_dir:
        report = run_evaluation(model, EvalOptions(tasks=settings.tasks, data_dir=settings.data_dir,
                                                   limit=settings.limit, num_fewshot=settings.num_fewshot),
                                progress=False)  # fmt: skip
        record["tasks"] = [r for r in report.rows() if r.get("paper_metric")]
    record["seconds"] = time.perf_counter() - start
    write_json_atomic(path, record)
    log(f"{entry.name}: validation loss {record['val_loss']:.4f} (perplexity {record['token_perplexity']:.2f}) "
        f"on {ppl.tokens:,} tokens")  # fmt: skip
    return record


def measure_speed(configs: dict[str, TrainConfig], settings: SpeedSettings, *, results: Path, log: Log) -> dict:
    """Training tokens/s and decoding ms/token of every model, side by side; results/speed.json."""
    from tnlm.compare.speed import decode_speed, train_speed

    path = results / "speed.json"
    if (done := read_result(path, asdict(settings))) is not None:
        return done
    start = time.perf_counter()
    train = train_speed(configs, lengths=settings.train_lengths, tokens=settings.train_tokens,
                        repeats=settings.train_repeats, log=log)  # fmt: skip
    decode = decode_speed(configs, contexts=settings.decode_contexts, new_tokens=settings.decode_tokens,
                          rounds=settings.decode_rounds, log=log)  # fmt: skip
    record = {"settings": asdict(settings), "train": train, "decode": decode, "seconds": time.perf_counter() - start}
    write_json_atomic(path, record)
    return record


def sample_models(configs: dict[str, TrainConfig], settings: SampleSettings, *, results: Path, log: Log) -> dict:
    """A continuation of each prompt from each trained model (seeded); results/samples.json."""
    from tnlm.generation import SamplingParams, generate

    path = results / "samples.json"
    if (done := read_result(path, asdict(settings))) is not None or not settings.prompts:
        return done or {"settings": asdict(settings), "samples": {}}
    sampling = SamplingParams(temperature=settings.temperature, top_p=settings.top_p,
                              repetition_penalty=settings.repetition_penalty)  # fmt: skip
    samples = {}
    for name, config in configs.items():
        em = load_trained(config)
        out = generate(em.model, em.tokenizer, list(settings.prompts), max_new_tokens=settings.max_new_tokens,
                       sampling=sampling, seed=settings.seed)  # fmt: skip
        samples[name] = [{"prompt": p, "text": s.text} for p, s in zip(settings.prompts, out.sequences)]
        log(f"{name}: {settings.prompts[0]!r} -> {out.sequences[0].text[:80]!r}")
    record = {"settings": asdict(settings), "samples": samples}
    write_json_atomic(path, record)
    return record
