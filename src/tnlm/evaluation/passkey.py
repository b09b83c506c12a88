"""Passkey retrieval (the long-context test of the Infini-attention paper): a random number is hidden
at a chosen depth inside filler text of a chosen length, and the model is asked to repeat it.

The prompt is an instruction, filler sentences, the key sentence at `depth` (0 = right after the
instruction, 1 = right before the question), more filler, and the question; the model answers by
greedy decoding, the prompt fed in chunks with the model's cache (TransNormer and Infini-attention in
constant memory). Accuracy is reported per (length, depth); lengths above the model's training length
are allowed (that is the point of the test) and marked as such.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tnlm.errors import ConfigError
from tnlm.evaluation.model import EvalModel
from tnlm.generation.engine import new_state

INSTRUCTION = "Somewhere in the long text below a pass key is hidden. Read everything and remember the pass key.\n"
FILLER = "The day went by like any other day, and the town stayed calm and ordinary. "
KEY_SENTENCE = "The pass key is {key}. Keep {key} in mind: it is the pass key. "
QUESTION = "\nWhat is the pass key? The pass key is"


def passkey_prompt(model: EvalModel, *, length: int, depth: float, key: str) -> list[int]:
    """Token ids of a prompt of exactly `length` tokens with `key` at `depth` in [0, 1]."""
    if not 0.0 <= depth <= 1.0:
        raise ConfigError(f"depth must be between 0 and 1, got {depth}")
    enc = model.tokenizer.encode
    head = enc(INSTRUCTION, add_special_tokens=True)
    key_ids = enc(KEY_SENTENCE.format(key=key), add_special_tokens=False)
    tail = enc(QUESTION, add_special_tokens=False)
    filler = enc(FILLER, add_special_tokens=False)
    room = length - len(head) - len(key_ids) - len(tail)
    if room < 0:
        raise ConfigError(f"length {length} is too short for the instruction, key and question ({length - room} tokens)")
    reps, extra = divmod(room, len(filler))
    before = round(reps * depth)
    partial = filler[:extra]  # on the longer side, so depths 0 and 1 put the key at the very edges
    if depth >= 0.5:
        body = filler * before + partial + key_ids + filler * (reps - before)
    else:
        body = filler * before + key_ids + filler * (reps - before) + partial
    return head + body + tail


@dataclass
class PasskeyResult:
    lengths: list[int]
    depths: list[float]
    trials: int
    accuracy: dict[tuple[int, float], float]  # (length, depth) -> fraction retrieved
    training_length: int | None
    answers: list[dict] = field(default_factory=list)  # every trial: length, depth, key, answer, correct

    def beyond_training(self, length: int) -> bool:
        return self.training_length is not None and length > self.training_length

    def rows(self) -> list[dict]:
        return [{"length": n, "depth": d, "accuracy": self.accuracy[(n, d)], "trials": self.trials,
                 "beyond_training_length": self.beyond_training(n)} for n in self.lengths for d in self.depths]  # fmt: skip


@torch.inference_mode()
def _answer(model: EvalModel, prompt: list[int], *, max_new_tokens: int, chunk_size: int, reference: bool) -> str:
    state = new_state(model.model, reference=reference)
    ids = torch.tensor([prompt])
    logits = state.prefill(ids, torch.ones_like(ids), chunk_size=chunk_size)
    out = []
    for _ in range(max_new_tokens):
        token = int(logits[0].argmax())
        if token == model.tokenizer.eos_token_id:
            break
        out.append(token)
        logits = state.step(torch.tensor([token]))
    return model.tokenizer.decode(out)


def retrieved(answer: str, key: str) -> bool:
    """The first number in the answer is the key."""
    found = re.search(r"\d+", answer)
    return found is not None and found.group() == key


def passkey_retrieval(
    model: EvalModel,
    *,
    lengths: list[int],
    depths: list[float],
    trials: int = 5,
    seed: int = 0,
    chunk_size: int = 2048,
    training_length: int | None = None,
    progress: bool = True,
    reference_decoding: bool = False,
) -> PasskeyResult:
    """Accuracy of retrieving a random 5-digit key for every (length, depth), over `trials` keys.
    reference_decoding: decode the answers with the general forward pass instead of the fast step."""
    from tqdm import tqdm

    if trials < 1 or not lengths or not depths:
        raise ConfigError("passkey retrieval needs at least one length, one depth and one trial")
    rng = random.Random(seed)
    result = PasskeyResult(sorted(lengths), sorted(depths), trials, {}, training_length or model.training_length)
    with tqdm(total=len(lengths) * len(depths) * trials, desc="passkey", disable=not progress, leave=False) as bar:
        for n in result.lengths:
            for d in result.depths:
                hits = 0
                for _ in range(trials):
                    key = str(rng.randint(10000, 99999))
                    answer = _answer(model, passkey_prompt(model, length=n, depth=d, key=key), max_new_tokens=8, chunk_size=chunk_size,
                                     reference=reference_decoding)
                    ok = retrieved(answer, key)
                    hits += ok
                    result.answers.append({"length": n, "depth": d, "key": key, "answer": answer, "correct": ok})
                    bar.update(1)
                result.accuracy[(n, d)] = hits / trials
    return result


def plot_heatmap(result: PasskeyResult, path: str | Path, *, title: str = "passkey retrieval") -> Path:
    """Accuracy per (depth, length) as a PNG; lengths beyond the training length are marked with '*'."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("the heat map needs matplotlib: pip install 'tnlm[bench]'") from None
    grid = [[result.accuracy[(n, d)] for n in result.lengths] for d in result.depths]
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(result.lengths), 1.2 + 0.5 * len(result.depths)))
    image = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="RdYlGn", aspect="auto")
    ax.set_xticks(range(len(result.lengths)), [f"{n}{'*' if result.beyond_training(n) else ''}" for n in result.lengths])
    ax.set_yticks(range(len(result.depths)), [f"{d:.2f}" for d in result.depths])
    ax.set_xlabel("context length (tokens; * = beyond the training length)")
    ax.set_ylabel("key depth")
    ax.set_title(title)
    for i, row in enumerate(grid):
        for j, value in enumerate(row):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8)
    fig.colorbar(image, ax=ax, label="accuracy")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path
