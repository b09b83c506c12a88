"""lm-evaluation-harness integration (needs the `eval` extra: pip install 'tnlm[eval]').

Importing this package registers the `tnlm` model with the harness. The harness loads its own model
backends only when its registry is empty, so lm_eval.models is imported first (otherwise `hf` and the
other built-in backends would disappear once `tnlm` is registered).

- TnlmLM (`--model tnlm`): loglikelihood, loglikelihood_rolling and generate_until for every family.
- write_harness_tasks(data_dir, out_dir, names): local task YAMLs over the original files (offline).
- the `tnlm-lm-eval` command: the harness's CLI with `tnlm` registered and `--tnlm-data-dir`.
"""

from tnlm.errors import ConfigError

try:
    import lm_eval.models  # noqa: F401  (registers the built-in backends before ours)
except ImportError:
    raise ConfigError("the lm-evaluation-harness adapter needs lm-eval: pip install 'tnlm[eval]'") from None

from tnlm.evaluation.harness.model import TnlmLM  # noqa: E402  (registers "tnlm")
from tnlm.evaluation.harness.tasks import write_harness_tasks  # noqa: E402

__all__ = ["TnlmLM", "write_harness_tasks"]
