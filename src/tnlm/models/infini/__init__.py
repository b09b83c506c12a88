from tnlm.models.infini.configuration import InfiniConfig
from tnlm.models.infini.modeling import InfiniCache, InfiniForCausalLM, InfiniModel

__all__ = ["InfiniCache", "InfiniConfig", "InfiniForCausalLM", "InfiniModel"]
