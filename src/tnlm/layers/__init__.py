"""nn.Modules built from tnlm.ops: norms, gated MLPs, positions, decays and token mixers."""

from tnlm.layers.decay import alibi_slopes, transnormer_log_decay
from tnlm.layers.lrpe import Lrpe
from tnlm.layers.mlp import SGLU
from tnlm.layers.norm import SRMSNorm, build_norm

__all__ = ["SGLU", "Lrpe", "SRMSNorm", "alibi_slopes", "build_norm", "transnormer_log_decay"]
