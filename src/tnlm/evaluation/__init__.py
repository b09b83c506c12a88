"""Evaluation: perplexity, multiple-choice benchmarks from local files, passkey retrieval, and an
lm-evaluation-harness adapter (tnlm.evaluation.harness, optional `eval` extra).

>>> from tnlm.evaluation import EvalOptions, load_eval_model, run_evaluation
>>> model = load_eval_model("tnl-tiny")                       # doctest: +SKIP
>>> report = run_evaluation(model, EvalOptions(tasks=("piqa",), data_dir="data/eval", limit=50))  # doctest: +SKIP
"""

from tnlm.evaluation.model import EvalModel, load_eval_model
from tnlm.evaluation.multiple_choice import TaskResult, evaluate_task, mean_stderr
from tnlm.evaluation.passkey import PasskeyResult, passkey_retrieval, plot_heatmap
from tnlm.evaluation.perplexity import Document, PerplexityResult, document_nll, perplexity
from tnlm.evaluation.prompts import MCItem, build_items
from tnlm.evaluation.results import EvalReport, print_report, write_json
from tnlm.evaluation.runner import EvalOptions, PasskeyOptions, PerplexityOptions, run_evaluation
from tnlm.evaluation.scorer import Score, TokenRequest, score_tokens
from tnlm.evaluation.sources import read_documents
from tnlm.evaluation.tasks import TaskDataError, resolve_task, resolve_tasks

__all__ = [
    "Document", "EvalModel", "EvalOptions", "EvalReport", "MCItem", "PasskeyOptions", "PasskeyResult",
    "PerplexityOptions", "PerplexityResult", "Score", "TaskDataError", "TaskResult", "TokenRequest",
    "build_items", "document_nll", "evaluate_task", "load_eval_model", "mean_stderr", "passkey_retrieval",
    "perplexity", "plot_heatmap", "print_report", "read_documents", "resolve_task", "resolve_tasks",
    "run_evaluation", "score_tokens", "write_json",
]  # fmt: skip
