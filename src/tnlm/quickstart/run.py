"""`quickstart(options)`: every stage in turn, each recorded in quickstart.json when it finishes, with
the time spent and the time left of the budget printed as it goes. A rerun skips the finished stages
and continues the interrupted one; a rerun of a finished quickstart only says where its report is."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tnlm.quickstart import stages
from tnlm.quickstart.plan import STAGES, Budget, Log, Options, State, clock

TITLES = {
    "data": "cleaning the text (tnlm data run)",
    "tokenizer": "training a BPE tokenizer (tnlm tokenizer train)",
    "pack": "packing token shards (tnlm data pack)",
    "compare": "TransNormer vs Transformer: same data, seed and tokens (tnlm compare)",
    "finetune": "LoRA fine-tuning the TransNormer on the shipped chat set (tnlm finetune)",
    "chat": "asking the chat model held-out questions (tnlm chat)",
    "summary": "writing the summary",
}


def quickstart(options: Options, *, log: Log, progress: bool = True) -> dict[str, Any]:
    """Run (or continue) the quickstart; returns its state (also in OUTPUT/quickstart.json)."""
    from tnlm.data.lock import folder_lock

    options.check()
    out = Path(options.output)
    state = State.claim(out, options.settings())
    if state.finished:
        return state.data
    budget = Budget.of(options)
    with folder_lock(out):
        for i, name in enumerate(STAGES, 1):
            if state.done(name) is not None:
                continue
            spent = state.spent_s()
            log(f"[{i}/{len(STAGES)}] {TITLES[name]}   ({clock(spent)} spent, about "
                f"{clock(budget.total_s - spent)} of the {clock(budget.total_s)} budget left)")  # fmt: skip
            start = time.perf_counter()
            record = _stage(name, options, out, budget, state, log=log, progress=progress)
            state.finish(name, record, wall_s=time.perf_counter() - start)
    log(f"done in {clock(state.spent_s())} (budget {clock(budget.total_s)})")
    return state.data


def _stage(name: str, options: Options, out: Path, budget: Budget, state: State, *, log: Log,
           progress: bool) -> dict[str, Any]:  # fmt: skip
    if name == "data":
        return stages.run_data(options, out, log=log, progress=progress)
    if name == "tokenizer":
        return stages.run_tokenizer(options, out, log=log)
    if name == "pack":
        return stages.run_pack(out, documents=state.done("data")["documents_out"], log=log, progress=progress)
    if name == "compare":
        return stages.run_compare(options, out, budget, log=log, progress=progress)
    if name == "finetune":
        rate = state.done("compare")["calibration"][stages.TNL_NAME]
        return stages.run_finetune(options, out, budget, tokens_per_s=rate, log=log, progress=progress)
    if name == "chat":
        return stages.run_chat(options, out, log=log)
    from tnlm.quickstart.summary import write_summary

    return write_summary(options, out, state, budget)
