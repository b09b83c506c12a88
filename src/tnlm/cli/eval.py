"""`tnlm eval`: benchmarks from local files, perplexity and passkey retrieval, with a results table
and JSON. torch and the evaluation code load inside the command, so `tnlm --help` stays fast."""

from __future__ import annotations

from pathlib import Path

import typer

TASKS_HELP = (
    "Comma-separated: piqa, arc_easy, arc_challenge, boolq, winogrande, copa, openbookqa, hellaswag, "
    "social_iqa, mmlu, cmmlu, ceval-valid (or one subject, e.g. mmlu_anatomy), perplexity (needs --text), passkey."
)


def _floats(text: str, what: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"{what} must be comma-separated numbers, got {text!r}") from None


def evaluate(
    model: str = typer.Argument(..., help="A preset name (random weights, byte tokenizer) or a model directory with a tokenizer."),
    tasks: str = typer.Option(..., "--tasks", "-t", help=TASKS_HELP),
    num_fewshot: int = typer.Option(0, "--num-fewshot", "-k", help="Solved examples before each question, from the task's training (or dev) split."),
    limit: float | None = typer.Option(None, "--limit", help="Only the first N documents of each task (a value below 1 is a fraction)."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the results as JSON here."),
    data_dir: Path = typer.Option(Path("data/eval"), "--data-dir", help="Folder with one sub-folder of original files per task (piqa/, arc/, boolq/, ...)."),
    batch_size: int = typer.Option(16, "--batch-size", help="Sequences per forward pass."),
    no_context_reuse: bool = typer.Option(False, "--no-context-reuse", help="Run every choice's context again instead of copying its cache."),
    seed: int = typer.Option(1234, "--seed", help="Seed of the few-shot sampler (and of the passkeys)."),
    text: str | None = typer.Option(None, "--text", help="perplexity: a text or .jsonl file, a packed-shard folder, a saved dataset or hf:NAME."),
    text_key: str = typer.Option("text", "--text-key", help="perplexity: the JSON / dataset field holding the text."),
    split: str = typer.Option("val", "--split", help="perplexity: the split of shards or a dataset."),
    separator: str | None = typer.Option(None, "--separator", help="perplexity: split a text file into documents at this string."),
    ppl_mode: str = typer.Option("auto", "--ppl-mode", help="perplexity: auto (stream for TransNormer/Infini, else window), stream or window."),
    window: int | None = typer.Option(None, "--window", help="perplexity: window length (default: the model's maximum context)."),
    stride: int | None = typer.Option(None, "--stride", help="perplexity: tokens scored per window after the first (default: the window)."),
    passkey_lengths: str = typer.Option("256,512,1024,2048", "--passkey-lengths", help="passkey: prompt lengths in tokens."),
    passkey_depths: str = typer.Option("0,0.25,0.5,0.75,1", "--passkey-depths", help="passkey: key positions, 0 = start, 1 = end."),
    passkey_trials: int = typer.Option(5, "--passkey-trials", help="passkey: random keys per (length, depth)."),
    passkey_plot: Path | None = typer.Option(None, "--passkey-plot", help="passkey: heat-map PNG (default: beside --output, or passkey.png)."),
    train_length: int | None = typer.Option(None, "--train-length", help="passkey: the model's training length, to flag longer prompts (default: from its config)."),
    dtype: str = typer.Option("float32", help="float32 or bfloat16 (bfloat16 is very slow on most CPUs)."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:N or mps."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    reference_decoding: bool = typer.Option(False, "--reference-decoding", help="passkey: decode with the general forward pass instead of the fast step (same answers, slower)."),
) -> None:
    """Evaluate a model on benchmarks read from local files (lm-evaluation-harness prompts), perplexity, passkey."""
    from tnlm.cli.options import quiet_transformers
    from tnlm.devices import resolve_device, resolve_dtype
    from tnlm.evaluation import EvalOptions, PasskeyOptions, PerplexityOptions, load_eval_model, print_report, run_evaluation
    from tnlm.evaluation.passkey import plot_heatmap
    from tnlm.evaluation.results import write_json
    from tnlm.evaluation.runner import plan

    torch_dtype, torch_device = resolve_dtype(dtype), resolve_device(device)
    if limit is not None and limit >= 1:
        limit = int(limit)
    options = EvalOptions(
        tasks=tuple(t.strip() for t in tasks.split(",") if t.strip()), data_dir=str(data_dir), num_fewshot=num_fewshot,
        limit=limit, batch_size=batch_size, reuse_context=not no_context_reuse, seed=seed,
        perplexity=PerplexityOptions(source=text, text_key=text_key, split=split, separator=separator, mode=ppl_mode,
                                     window=window, stride=stride),
        passkey=PasskeyOptions(lengths=tuple(int(x) for x in _floats(passkey_lengths, "--passkey-lengths")),
                               depths=tuple(_floats(passkey_depths, "--passkey-depths")), trials=passkey_trials,
                               training_length=train_length, reference_decoding=reference_decoding),
    )  # fmt: skip
    plan(options)  # unknown tasks and missing files fail before the model loads
    quiet_transformers()
    m = load_eval_model(model, dtype=torch_dtype, device=torch_device)
    report = run_evaluation(m, options, progress=progress)
    print_report(report)
    if output is not None:
        write_json(report.to_dict(), output)
        typer.echo(f"results written to {output}", err=True)
    if report.passkey is not None:
        png = passkey_plot or (output.with_suffix(".passkey.png") if output is not None else Path("passkey.png"))
        plot_heatmap(report.passkey, png, title=f"passkey retrieval: {model}")
        typer.echo(f"passkey heat map written to {png}", err=True)
