"""Compare architectures on equal terms: the same data, seed and token budget for every model, trained by
`tnlm.training.train`, then evaluated, timed and written up in one report.

    from tnlm.compare import compare, load_compare_config
    report = compare(load_compare_config("configs/compare/tiny.yaml", ["training.data.path=data/packed"]))
    print(report["verdict"]["text"])
"""

from tnlm.compare.config import CompareConfig, ModelEntry, load_compare_config
from tnlm.compare.run import compare

__all__ = ["CompareConfig", "ModelEntry", "compare", "load_compare_config"]
