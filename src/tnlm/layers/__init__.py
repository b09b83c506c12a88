"""nn.Modules built from tnlm.ops: norms, gated MLPs, positions, decays and token mixers."""

from tnlm.layers.decay import alibi_slopes, transnormer_log_decay
from tnlm.layers.infini_attention import InfiniAttention, InfiniState
from tnlm.layers.lrpe import Lrpe
from tnlm.layers.mlp import SGLU, SwiGLU
from tnlm.layers.norm import RMSNorm, SRMSNorm, build_norm
from tnlm.layers.positions import Alibi, RopeSpec, Rotary
from tnlm.layers.softmax_attention import SoftmaxAttention

__all__ = [
    "SGLU", "Alibi", "InfiniAttention", "InfiniState", "Lrpe", "RMSNorm", "RopeSpec", "Rotary", "SRMSNorm",
    "SoftmaxAttention", "SwiGLU", "alibi_slopes", "build_norm", "transnormer_log_decay",
]  # fmt: skip
