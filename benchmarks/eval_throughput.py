"""Multiple-choice scoring speed with and without context reuse (tnl-tiny, transformer-tiny), and the
scores of an untrained and a briefly trained tnl-tiny on the shared benchmark files.

Part 1, speed: the same items (the first --items of each shared task, byte tokenizer) are scored by
tnlm's scorer without context reuse (every choice runs its whole context, as lm-evaluation-harness
does), with tnlm's default reuse (an item's shared prefix runs once and its cache is copied for every
choice, when that saves at least a third of the item's tokens), and with reuse always, side by side
in one process, best of --rounds. Items/s and the ratios to no reuse per task and model (wall clock;
the CPU-time ratio is less sensitive to other processes). Reuse saves the trunk's
work on the shared context, not the LM head and softmax over every scored token: it pays most for
long contexts with short answers (BoolQ, ARC, MMLU-style) and least for tiny models whose head costs
as much as their trunk and tasks whose answers are most of the text (PIQA).

Part 2, scores: tnl-tiny with random weights, and tnl-tiny after --train-steps steps of next-byte
training on the TinyStories sample (a plain AdamW loop in this script: the project's trainer is not
used here), on every shared task (--score-limit items each; all by default). Chance is the mean of
1/choices; "sigma" is (acc - chance) / stderr. Models this small score near chance: the point is
that the pipeline moves the numbers in the right direction, not the numbers themselves.

    python benchmarks/eval_throughput.py            # full run: ~20-40 min on 2 idle cores
    python benchmarks/eval_throughput.py --quick    # smoke run: a minute
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # sleeping OpenMP workers on a shared machine
REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DATA = REPO.parent / "shared" / "data"
TASKS = ("piqa", "arc_easy", "arc_challenge", "boolq", "winogrande", "copa")
# whole: every choice runs its whole context (the harness's way); reuse: tnlm's default, an item's
# shared prefix runs once when that saves >= 1/3 of its tokens; always: shared whenever possible
SETTINGS = {"whole": (False, 0.0), "reuse": (True, 1 / 3), "always": (True, 0.0)}


def load_items(data_dir: Path, name: str, limit: int | None):
    from tnlm.evaluation.multiple_choice import apply_limit
    from tnlm.evaluation.prompts import build_items
    from tnlm.evaluation.tasks import resolve_task

    task = resolve_task(name, data_dir)[0]
    docs = apply_limit(task.load(data_dir, task.eval_split(data_dir)), limit)
    items, _ = build_items(task, docs)
    return task, items


def speed(models: dict, data_dir: Path, *, items: int, rounds: int, batch_size: int) -> list[dict]:
    from tnlm.evaluation.multiple_choice import score_items

    rows = []
    for name in TASKS:
        _, its = load_items(data_dir, name, items)
        tokens = None
        for model_name, model in models.items():
            best, cpu = {}, {}
            for reuse, min_saving in SETTINGS.values():  # warm-up: the first calls pay one-time costs
                score_items(model, its[:2], batch_size=batch_size, reuse_context=reuse, min_saving=min_saving)
            for _ in range(rounds):  # alternate the settings so drifting load hits all alike
                for setting, (reuse, min_saving) in SETTINGS.items():
                    t0, c0 = time.perf_counter(), time.process_time()
                    scores = score_items(model, its, batch_size=batch_size, reuse_context=reuse, min_saving=min_saving)
                    best[setting] = min(best.get(setting, float("inf")), time.perf_counter() - t0)
                    cpu[setting] = min(cpu.get(setting, float("inf")), time.process_time() - c0)
                    if tokens is None:
                        tokens = sum(len(model.encode(c + x)) for it in its for c, x in it.requests)
            assert len(scores) == len(its)
            row = dict(task=name, model=model_name, items=len(its), choice_tokens=tokens)
            for setting in SETTINGS:
                row[f"items_per_s_{setting}"] = len(its) / best[setting]
                row[f"cpu_s_{setting}"] = cpu[setting]
            row["speedup"] = best["whole"] / best["reuse"]
            row["speedup_always"] = best["whole"] / best["always"]
            row["cpu_speedup"] = cpu["whole"] / cpu["reuse"]
            print(f"  {name:14s} {model_name:17s} whole {row['items_per_s_whole']:7.1f} items/s  "
                  f"reuse {row['items_per_s_reuse']:7.1f} (x{row['speedup']:.2f})  "
                  f"always {row['items_per_s_always']:7.1f} (x{row['speedup_always']:.2f})", flush=True)  # fmt: skip
            rows.append(row)
    return rows


def train_briefly(model, text: str, *, steps: int, seq_len: int, batch: int, lr: float, seed: int) -> list[float]:
    """Next-byte prediction on random windows of `text` (byte tokenizer ids), AdamW with warmup and
    cosine decay. Returns the loss every step."""
    import math

    import torch

    from tnlm.generation import ByteTokenizer

    ids = torch.tensor(ByteTokenizer().encode(text), dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.param_groups(lr=lr, weight_decay=0.1), lr=lr, betas=(0.9, 0.95))
    warmup = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    model.train()
    losses = []
    for step in range(steps):
        starts = torch.randint(0, len(ids) - seq_len - 1, (batch,), generator=gen)
        x = torch.stack([ids[s : s + seq_len] for s in starts])
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % max(1, steps // 10) == 0 or step == steps - 1:
            print(f"  train step {step:5d}  loss {loss.item():.3f}", flush=True)
    return losses


def scores(models: dict, data_dir: Path, *, limit: int | None, batch_size: int) -> list[dict]:
    from tnlm.evaluation.multiple_choice import evaluate_task

    rows = []
    for name in TASKS:
        task, its = load_items(data_dir, name, limit)
        chance = sum(1 / len(it.requests) for it in its) / len(its)
        for model_name, model in models.items():
            r = evaluate_task(model, task, data_dir=data_dir, limit=limit, batch_size=batch_size, progress=False)
            acc, se = r.metrics["acc"]
            row = dict(task=name, model=model_name, items=r.items, chance=chance, acc=acc, acc_stderr=se,
                       sigma=(acc - chance) / se if se else float("nan"))  # fmt: skip
            if "acc_norm" in r.metrics:
                row["acc_norm"], row["acc_norm_stderr"] = r.metrics["acc_norm"]
            rows.append(row)
            print(f"  {name:14s} {model_name:17s} acc {100 * acc:5.1f} ± {100 * se:4.1f}  (chance {100 * chance:4.1f}, "
                  f"{row['sigma']:+.1f} sigma)", flush=True)  # fmt: skip
    return rows


def table_speed(rows: list[dict]) -> str:
    head = (f"{'task':14} {'model':17} {'items':>5} {'tokens/item':>11} {'whole items/s':>13} {'reuse items/s':>13} "
            f"{'reuse/whole':>11} {'(CPU time)':>10} {'always/whole':>12}")  # fmt: skip
    lines = [head, "-" * len(head)]
    lines += [f"{r['task']:14} {r['model']:17} {r['items']:>5} {r['choice_tokens'] / r['items']:>11.0f} "
              f"{r['items_per_s_whole']:>13.1f} {r['items_per_s_reuse']:>13.1f} {r['speedup']:>10.2f}x "
              f"{r['cpu_speedup']:>9.2f}x {r['speedup_always']:>11.2f}x" for r in rows]  # fmt: skip
    return "\n".join(lines)


def table_scores(rows: list[dict]) -> str:
    head = f"{'task':14} {'model':17} {'items':>5} {'chance %':>8} {'acc %':>6} {'± se':>5} {'sigma':>6} {'acc_norm %':>10}"
    lines = [head, "-" * len(head)]
    for r in rows:
        norm = f"{100 * r['acc_norm']:>10.1f}" if "acc_norm" in r else f"{'-':>10}"
        lines.append(f"{r['task']:14} {r['model']:17} {r['items']:>5} {100 * r['chance']:>8.1f} {100 * r['acc']:>6.1f} "
                     f"{100 * r['acc_stderr']:>5.1f} {r['sigma']:>+6.1f} {norm}")  # fmt: skip
    return "\n".join(lines)


def plot(speed_rows: list[dict], score_rows: list[dict], losses: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(16, 4.5))
    labels = [f"{r['task']}\n{r['model'].replace('-tiny', '')}" for r in speed_rows]
    x = range(len(speed_rows))
    ax1.bar([i - 0.27 for i in x], [r["items_per_s_whole"] for r in speed_rows], 0.27, label="whole context per choice")
    ax1.bar(list(x), [r["items_per_s_reuse"] for r in speed_rows], 0.27, label="reuse (default: when it saves >= 1/3)")
    ax1.bar([i + 0.27 for i in x], [r["items_per_s_always"] for r in speed_rows], 0.27, label="reuse always")
    ax1.set_xticks(list(x), labels, fontsize=6, rotation=90)
    ax1.set_ylabel("items / s")
    ax1.set_title("multiple-choice scoring speed (CPU, float32)")
    ax1.legend(fontsize=7)
    names = sorted({r["model"] for r in score_rows})
    for k, m in enumerate(names):
        rs = [r for r in score_rows if r["model"] == m]
        ax2.bar([i + 0.4 * k - 0.2 for i in range(len(rs))], [100 * r["acc"] for r in rs], 0.4,
                yerr=[100 * r["acc_stderr"] for r in rs], label=m, capsize=2)  # fmt: skip
    rs = [r for r in score_rows if r["model"] == names[0]]
    ax2.scatter(range(len(rs)), [100 * r["chance"] for r in rs], marker="_", s=400, color="k", label="chance", zorder=3)
    ax2.set_xticks(range(len(rs)), [r["task"] for r in rs], fontsize=7)
    ax2.set_ylabel("acc %")
    ax2.set_title("tnl-tiny: untrained vs briefly trained")
    ax2.legend(fontsize=7)
    ax3.plot(losses)
    ax3.set_xlabel("training step")
    ax3.set_ylabel("next-byte loss")
    ax3.set_title("the brief training run")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=DATA)
    p.add_argument("--items", type=int, default=100, help="items per task for the speed part")
    p.add_argument("--rounds", type=int, default=3, help="timed repeats per setting; the fastest counts")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--score-limit", type=int, default=None, help="items per task for the score part (default: all)")
    p.add_argument("--train-steps", type=int, default=600)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--train-batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the script runs")
    p.add_argument("--out", type=Path, default=RESULTS / "eval_throughput")
    args = p.parse_args()
    if args.quick:
        args.items, args.rounds, args.score_limit, args.train_steps, args.seq_len = 6, 1, 12, 4, 64
        args.out = args.out.with_name(args.out.name + "_quick")

    import torch

    from tnlm.evaluation import EvalModel
    from tnlm.generation import ByteTokenizer
    from tnlm.models import create_model

    torch.set_num_threads(args.threads)
    tok = ByteTokenizer()
    models = {name: EvalModel(create_model(name, seed=0).eval(), tok, name) for name in ("tnl-tiny", "transformer-tiny")}
    print(f"part 1: scoring speed, {args.items} items per task, best of {args.rounds}, batch {args.batch_size}, "
          f"{args.threads} threads")  # fmt: skip
    speed_rows = speed(models, args.data_dir, items=args.items, rounds=args.rounds, batch_size=args.batch_size)

    print(f"part 2: brief training of tnl-tiny ({args.train_steps} steps of {args.train_batch} x {args.seq_len} bytes)")
    text = (args.data_dir / "tinystories" / "tinystories_sample.complete.txt").read_text(encoding="utf-8")
    trained = create_model("tnl-tiny", seed=0)
    t0 = time.perf_counter()
    losses = train_briefly(trained, text, steps=args.train_steps, seq_len=args.seq_len, batch=args.train_batch,
                           lr=args.lr, seed=0)  # fmt: skip
    train_s = time.perf_counter() - t0
    pair = {"tnl-tiny untrained": models["tnl-tiny"], "tnl-tiny trained": EvalModel(trained.eval(), tok, "trained")}
    score_rows = scores(pair, args.data_dir, limit=args.score_limit, batch_size=args.batch_size)

    text_speed, text_scores = table_speed(speed_rows), table_scores(score_rows)
    print("\n" + text_speed + "\n\n" + text_scores)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(threads=args.threads, items=args.items, rounds=args.rounds, batch_size=args.batch_size,
                score_limit=args.score_limit, train_steps=args.train_steps, seq_len=args.seq_len,
                train_batch=args.train_batch, lr=args.lr, train_seconds=train_s, final_loss=losses[-1] if losses else None,
                trainer="in-script AdamW loop (next-byte loss on the TinyStories sample)", tokenizer="byte",
                cpu=platform.processor() or platform.machine(), torch=torch.__version__)  # fmt: skip
    record = dict(meta=meta, speed=speed_rows, scores=score_rows, table_speed=text_speed, table_scores=text_scores)
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2))
    plot(speed_rows, score_rows, losses, args.out.with_suffix(".png"))
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
