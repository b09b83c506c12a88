from tnlm.models.transformer.configuration import TransformerConfig
from tnlm.models.transformer.modeling import KVCache, TransformerForCausalLM, TransformerModel

__all__ = ["KVCache", "TransformerConfig", "TransformerForCausalLM", "TransformerModel"]
