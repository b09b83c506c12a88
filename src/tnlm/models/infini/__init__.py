from tnlm.models.infini.cache import InfiniCache
from tnlm.models.infini.configuration import InfiniConfig
from tnlm.models.infini.modeling import InfiniForCausalLM, InfiniModel

__all__ = ["InfiniCache", "InfiniConfig", "InfiniForCausalLM", "InfiniModel"]
