from tnlm.models.transnormer.cache import TransnormerCache
from tnlm.models.transnormer.configuration import TransnormerConfig
from tnlm.models.transnormer.modeling import TransnormerForCausalLM, TransnormerModel

__all__ = ["TransnormerCache", "TransnormerConfig", "TransnormerForCausalLM", "TransnormerModel"]
