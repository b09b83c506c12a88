from tnlm.models.transnormer.configuration import TransnormerConfig
from tnlm.models.transnormer.modeling import TransnormerCache, TransnormerForCausalLM, TransnormerModel

__all__ = ["TransnormerCache", "TransnormerConfig", "TransnormerForCausalLM", "TransnormerModel"]
