"""The stages of a quickstart, each a call into the library that a user could make as its own command:
clean the text (`tnlm data run`), train a tokenizer (`tnlm tokenizer train`), pack token shards
(`tnlm data pack`), compare a TransNormer with a Transformer (`tnlm compare`), fine-tune the TransNormer
on the shipped chat set (`tnlm finetune`, `tnlm merge-lora`), and ask the chat model a few questions.
Each returns the numbers its stage record keeps; each resumes (or simply reruns) after an interruption.

    OUTPUT/data/clean/      cleaned documents and the pipeline's report.json
    OUTPUT/tokenizer/       the BPE tokenizer
    OUTPUT/data/packed/     token shards (train and val)
    OUTPUT/compare/         the comparison: report.md, report.json, plots, runs/NAME/model
    OUTPUT/chat/            the fine-tuning run (adapter/) and the merged chat model (model/)
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from tnlm.errors import DataError
from tnlm.quickstart.plan import Budget, Log, Options

PIPELINE_STEPS: list[dict[str, Any]] = [
    {"step": "normalize"},
    {"step": "gopher_quality", "min_words": 30, "max_symbol_word_ratio": 0.2},
    {"step": "gopher_repetition"},
    {"step": "exact_dedup"},
    {"step": "minhash_dedup", "ngram": 5, "num_perm": 128, "threshold": 0.8},
    {"step": "pii"},
    {"step": "perplexity_tail", "scorer": {"type": "ngram", "reference": "builtin", "order": 5, "max_docs": 500},
     "drop_fraction": 0.05},
]  # fmt: skip
VAL_FRACTION = 0.05  # of the documents, for validation (about 30,000 tokens of the built-in corpus)
VAL_DOCUMENTS = 8  # the least number of validation documents aimed at (the split is by a hash of each id)
PROMPTS = ("The for statement", "A list is")
TNL_NAME, TRANSFORMER_NAME = "transnormer", "transformer"
CHAT_QUESTIONS = 3  # held-out questions of the chat set put to the chat model


def clean_dir(out: Path) -> Path:
    return out / "data" / "clean"


def tokenizer_dir(out: Path) -> Path:
    return out / "tokenizer"


def packed_dir(out: Path) -> Path:
    return out / "data" / "packed"


def compare_dir(out: Path) -> Path:
    return out / "compare"


def chat_dir(out: Path) -> Path:
    return out / "chat"


def pipeline_config(options: Options, out: Path) -> dict[str, Any]:
    """The cleaning pipeline of configs/data/quickstart.yaml, on the built-in corpus or the user's files."""
    source = {"type": "builtin", "kind": "all", "num_shards": 8} if options.data is None else \
        {"type": "files", "paths": [options.data]}  # fmt: skip
    return {"source": source, "output": str(clean_dir(out)), "workers": 2, "compression": "none",
            "steps": PIPELINE_STEPS}  # fmt: skip


def run_data(options: Options, out: Path, *, log: Log, progress: bool) -> dict[str, Any]:
    from tnlm.data.extras import modules_for_pipeline, require
    from tnlm.data.pipeline import run_pipeline

    config = pipeline_config(options, out)
    require(modules_for_pipeline(config), what="the quickstart's cleaning pipeline")
    report = run_pipeline(config, progress=progress)
    first, last = report.steps[0], report.steps[-1]
    if last.docs_out == 0:
        raise DataError(f"no document of {options.data or 'the built-in corpus'} passed the cleaning steps "
                        f"(see {clean_dir(out) / 'report.json'}): give more text, in documents of 30 words or more")  # fmt: skip
    log(f"  {first.docs_in:,} documents ({first.bytes_in / 1e6:.1f} MB) -> {last.docs_out:,} kept "
        f"({last.bytes_out / 1e6:.1f} MB); per-step report: {clean_dir(out) / 'report.json'}")  # fmt: skip
    return {"documents_in": first.docs_in, "documents_out": last.docs_out, "bytes_in": first.bytes_in,
            "bytes_out": last.bytes_out, "folder": str(clean_dir(out))}  # fmt: skip


def run_tokenizer(options: Options, out: Path, *, log: Log) -> dict[str, Any]:
    """A byte-fallback BPE on the cleaned documents, saved whole or not at all."""
    from tnlm.data.tokenizer import save_tokenizer
    from tnlm.interrupt import call_isolated

    folder, partial = tokenizer_dir(out), out / "tokenizer.partial"
    shutil.rmtree(partial, ignore_errors=True)
    tok = call_isolated(_train_tokenizer, str(clean_dir(out)), vocab_size=options.scale.vocab_size)
    save_tokenizer(tok, partial)
    shutil.rmtree(folder, ignore_errors=True)  # a folder left by a run stopped between the two renames
    partial.rename(folder)
    log(f"  {tok.get_vocab_size():,} tokens -> {folder}")
    return {"vocab_size": tok.get_vocab_size(), "folder": str(folder)}


def _train_tokenizer(clean: str, *, vocab_size: int) -> Any:
    from tnlm.data.sources import FileSource
    from tnlm.data.tokenizer import train_tokenizer

    texts = (doc.text for doc in FileSource(paths=[clean]).documents())
    return train_tokenizer(texts, vocab_size=vocab_size, show_progress=False)


def val_fraction(documents: int) -> float:
    """VAL_FRACTION, or more for a small corpus: about VAL_DOCUMENTS documents at least."""
    return round(max(VAL_FRACTION, min(0.25, VAL_DOCUMENTS / max(documents, 1))), 4)


def run_pack(out: Path, *, documents: int, log: Log, progress: bool) -> dict[str, Any]:
    from tnlm.data.pack import pack

    meta = pack([str(clean_dir(out))], tokenizer_dir(out), packed_dir(out), val_fraction=val_fraction(documents),
                progress=progress)  # fmt: skip
    splits = {name: meta["splits"].get(name, {}).get("tokens", 0) for name in ("train", "val")}
    if not splits["val"] or not splits["train"]:
        raise DataError(f"too little text for a training and a validation split ({splits['train']:,} and "
                        f"{splits['val']:,} tokens): give more documents with --data")  # fmt: skip
    log(f"  {splits['train']:,} training and {splits['val']:,} validation tokens -> {packed_dir(out)}")
    return {"train_tokens": splits["train"], "val_tokens": splits["val"], "folder": str(packed_dir(out))}


def compare_raw(options: Options, out: Path, budget: Budget, *, progress: bool) -> dict[str, Any]:
    """The comparison: tnl-tiny and transformer-tiny on the same shards, seed and tokens."""
    s = options.scale
    lengths = list(budget.speed_lengths)
    return {
        "output": str(compare_dir(out)),
        "training": {
            "seed": options.seed, "data": {"path": str(packed_dir(out)), "seq_len": s.seq_len,
                                           "batch_size": s.batch_size, "mode": "windows"},
            "optimizer": {"lr": 3.0e-3, "weight_decay": 0.1}, "schedule": {"decay": "cosine", "min_lr_ratio": 0.1},
            "eval": {"batches": 2}, "log": {"tensorboard": "false", "plot": False, "progress": progress},
        },
        "budget": {"seconds": budget.train_s, "warmup_fraction": 0.05, "validations": 4},
        "models": [{"name": TNL_NAME, "model": "tnl-tiny", "overrides": s.tnl},
                   {"name": TRANSFORMER_NAME, "model": "transformer-tiny", "overrides": s.transformer}],
        "speed": {"train_lengths": lengths, "train_tokens": s.speed_tokens, "train_repeats": 2,
                  "decode_contexts": lengths, "decode_tokens": s.decode_tokens, "decode_rounds": 2},
        "samples": {"prompts": list(PROMPTS), "max_new_tokens": s.max_new_tokens, "seed": options.seed},
    }  # fmt: skip


def run_compare(options: Options, out: Path, budget: Budget, *, log: Log, progress: bool) -> dict[str, Any]:
    from tnlm.compare import compare, load_compare_config

    report = compare(load_compare_config(None, raw=compare_raw(options, out, budget, progress=progress)), log=log)
    return {"report": str(compare_dir(out) / "report.md"), "verdict": report["verdict"].get("text"),
            "calibration": report["plan"]["calibration"], "steps": report["plan"]["steps"],
            "tokens": report["plan"]["tokens"]}  # fmt: skip


def finetune_overrides(options: Options, out: Path, budget: Budget, *, tokens_per_s: float,
                       progress: bool) -> list[str]:  # fmt: skip
    """LoRA on the shipped chat set, for as many steps as `budget.finetune_s` allows at the speed the
    TransNormer pretrained at (a LoRA step costs about as much as a pretraining step of its size)."""
    s = options.scale
    steps = max(4, int(budget.finetune_s * tokens_per_s // (s.chat_seq_len * s.batch_size)))
    every = max(1, steps // 2)
    base = compare_dir(out) / "runs" / TNL_NAME / "model"
    return [f"output={chat_dir(out)}", f"seed={options.seed}", "method=lora", f"model.name={base}",
            "data.path=builtin:pydoc-chat", f"data.seq_len={s.chat_seq_len}", f"data.batch_size={s.batch_size}",
            "lora.rank=16", "lora.alpha=32", "lora.dropout=0.0", "optimizer.lr=3.0e-3", "optimizer.weight_decay=0.0",
            f"schedule.warmup_steps={max(1, steps // 10)}", f"train.steps={steps}", f"eval.every={every}",
            "eval.batches=4", f"checkpoint.every={every}", "checkpoint.keep=1", "log.tensorboard=false",
            "log.plot=false", f"log.progress={str(progress).lower()}"]  # fmt: skip


def run_finetune(options: Options, out: Path, budget: Budget, *, tokens_per_s: float, log: Log,
                 progress: bool) -> dict[str, Any]:  # fmt: skip
    """LoRA adapters on the pretrained TransNormer (resuming an interrupted run), merged into a model."""
    from tnlm.training.checkpoint import CheckpointManager
    from tnlm.training.finetune import finetune, load_finetune_config, merge_lora

    config = load_finetune_config(None, finetune_overrides(options, out, budget, tokens_per_s=tokens_per_s, progress=progress))
    run = chat_dir(out)
    resume = CheckpointManager(run / "checkpoints", keep=1).latest() is not None
    if not (run / "adapter").is_dir():
        if not resume and run.exists():
            shutil.rmtree(run)  # a run stopped before its first checkpoint: nothing to keep
        result = finetune(config, resume=resume)
        val_loss, step = result.val_loss, result.step
    else:
        val_loss, step = None, config.train.steps
    merged = merge_lora(config.model.name, run / "adapter", run / "model", overwrite=True)
    log(f"  {step} LoRA steps on the shipped chat set; chat model: {merged}")
    return {"steps": step, "val_loss": val_loss, "adapter": str(run / "adapter"), "model": str(merged),
            "base": config.model.name}  # fmt: skip


def run_chat(options: Options, out: Path, *, log: Log) -> dict[str, Any]:
    """Held-out questions of the chat set, each in a fresh conversation, answered greedily by the chat
    model; the expected answer beside each."""
    from tnlm.models.checkpoint import quiet_transformers
    from tnlm.evaluation import load_eval_model
    from tnlm.generation import ChatSession, SamplingParams
    from tnlm.training.config import ChatDataSection
    from tnlm.training.finetune.build import split_dialogues

    _, held_out, _ = split_dialogues(ChatDataSection(path="builtin:pydoc-chat"), seed=options.seed)
    with quiet_transformers():
        em = load_eval_model(chat_dir(out) / "model")
    exchanges = []
    for dialogue in held_out[:CHAT_QUESTIONS]:
        question, expected = _first_exchange(dialogue)
        session = ChatSession(em.model, em.tokenizer)
        answer = "".join(session.send(question, max_new_tokens=options.scale.max_new_tokens,
                                      sampling=SamplingParams(temperature=0.0)))  # fmt: skip
        exchanges.append({"question": question, "answer": answer.strip(), "expected": expected})
        log(f"  you: {question}\n  model: {answer.strip()}\n  (the chat set says: {expected})")
    return {"exchanges": exchanges, "model": str(chat_dir(out) / "model")}


def _first_exchange(dialogue: Any) -> tuple[str, str]:
    messages = [m for m in dialogue.messages if m["role"] != "system"]
    return messages[0]["content"], messages[1]["content"]
