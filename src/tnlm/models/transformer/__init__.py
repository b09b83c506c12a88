from tnlm.models.transformer.cache import KVCache
from tnlm.models.transformer.configuration import TransformerConfig
from tnlm.models.transformer.modeling import TransformerForCausalLM, TransformerModel

__all__ = ["KVCache", "TransformerConfig", "TransformerForCausalLM", "TransformerModel"]
