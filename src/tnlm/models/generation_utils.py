"""Hooks that let transformers' `model.generate()` drive a family that keeps its own decoding state.

transformers builds its own DynamicCache unless told otherwise; every tnlm family keeps its decoding
state in its own object (TransNormer's recurrent state, the Transformer's KVCache, Infini-attention's
memory), so each causal-LM class lists this mixin FIRST in its bases. The model then creates its cache
on the first forward and generate() passes it back. Strategies that need to rewind or fork the state
are refused with a clear error up front.
"""

from __future__ import annotations

from transformers.generation.configuration_utils import GenerationMode

from tnlm.errors import ConfigError

STATE_SAFE_MODES = (GenerationMode.GREEDY_SEARCH, GenerationMode.SAMPLE)


class OwnStateGenerationMixin:
    """For `class XForCausalLM(OwnStateGenerationMixin, XPreTrainedModel, GenerationMixin)`."""

    # transformers refuses assisted generation for stateful models (they cannot roll back a state)
    _is_stateful = True

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False

    def _validate_generation_mode(self, generation_mode, generation_config, generation_mode_kwargs) -> None:
        if generation_mode not in STATE_SAFE_MODES:
            raise ConfigError(
                f"{type(self).__name__} keeps its own decoding state, which {generation_mode.value} cannot "
                "use (it would need to fork, reorder or rewind that state; a recurrent state cannot be "
                "rewound). Use greedy decoding or sampling: num_beams=1, no assistant model, no contrastive "
                "search or DoLa."
            )
        super()._validate_generation_mode(generation_mode, generation_config, generation_mode_kwargs)

    def _reorder_cache(self, cache: object, beam_idx: object) -> object:
        raise ConfigError(
            f"{type(self).__name__}'s decoding state cannot be reordered for beam search; use num_beams=1"
        )
