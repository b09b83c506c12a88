"""The fast decode step: one token per sequence through a tnlm model without the per-step overhead of
the general forward pass. `DecodeState` (state.py) is the reference this is tested against.

A decode step of a small model is mostly not arithmetic: the Hugging Face forward builds output
objects, recomputes every position from the whole attention mask (a cumsum over the context), checks
the mask on the host, grows the mask by concatenation, and each layer's general code handles prompts,
padding and packed documents that a one-token step does not have. `FastDecodeState.step` does only
what a step needs:

    x = embed(tokens) * scale                                    (B, d)
    for each block: the family's one-token step, state updated in place
    logits = lm_head(final_norm(x))                              (B, V)

- TransNormer: SRMSNorm, one qkvu product, LRPE from a per-row position counter, the recurrent update
  S = S + (lambda - 1) S + k^T v done in place on the layer's state and o = q S read in the same pass (a C kernel,
  ops/decode_kernels.py, where it builds), SGLU. Where the C kernels built and the layer's products take
  the panel layout, the whole layer is one C call (decode_kernels.TransnormerLayer: the same arithmetic,
  ~3 instead of ~25 operators' overhead); the operators stay as its reference and for what it does not
  compute (LayerNorm, a tensor-parallel shard, another dtype or device).
- Transformer: the same attention code as the reference on the keys and values appended in place, the
  rotary angles computed once per step for all layers.
- Infini-attention (and any other tnlm family): the blocks' own forward, called directly with inputs
  built incrementally (no model wrapper, no mask scan).

Each step uses the same arithmetic in the same order as the reference, so the two give the same
tokens and logits within float32 rounding (tests/generation/test_gen_fast.py checks every family, with
and without left padding, across a chat's turns). The prompt (prefill) goes through the model's
forward, as in the reference; a TransNormer prompt is cut into chunks of PREFILL_CHUNK tokens unless
the caller chooses a chunk size (softmax attention keeps its keys and values anyway, and its one-shot
causal kernel needs no mask, so the other families take the prompt whole by default).
Models from outside tnlm (e.g. Hugging Face Llama) take the reference step.

`fast_step(model)` gives the step itself (FastStep, one per model): FastDecodeState uses it for one
batch from start to end, generation/batch.py's DecodeBatch for a server's rows joining and leaving.
Its linear layers read their weights in the layout measured fastest for the batch size (layouts.py);
the weight copies that takes are memory the model does not show (FastStep.extra_nbytes reports it).
A step of a small batch runs its small operators on one thread and its products, and any state or
attention larger than SERIAL_ELEMENTS numbers, on all of them (layouts.serial: a parallel region's
wake-up costs more than such an operator's arithmetic).
"""

from __future__ import annotations

import functools
import weakref
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from tnlm.errors import ConfigError
from tnlm.generation import layouts
from tnlm.generation.layouts import LAYOUTS, Layouts, Linears, Watch
from tnlm.generation.state import DecodeState
from tnlm.ops import decode_kernels

# A TransNormer prompt longer than this goes through the model in chunks of this many tokens: the result
# is the same (the recurrent state carries over), the activations stay bounded by the chunk whatever
# the prompt length, and each chunk is still long enough for the block algorithm's matrix products.
PREFILL_CHUNK = 2048
# A step whose activations (rows x widest layer output) have at most this many numbers runs its small
# operators on one thread; a layer's recurrent state or keys and values larger than it are updated and
# read on all threads (at 2**19 floats, 2 MB, one thread's pass and a parallel region's wake-up are alike).
SERIAL_ELEMENTS = 1 << 19
# A layer whose products are all in panels runs as one C call (decode_kernels.TransnormerLayer), which saves ~25
# operators (~100 us a layer on these CPUs): where a layer can fuse, the panel layout is chosen for its products
# unless another is faster by more than this factor and a quarter of those operators' dispatch (measured:
# layouts.dispatch_seconds; the tiny presets' products take a few microseconds, about one dispatch). (The layouts are timed on weights the caches hold, where
# oneDNN's packed product computes a few rows faster than it streams them from memory in a real step: with
# the earlier AVX2-only panel kernel it won the 2-4-row measurements of the issue-20 model by 5-30%, and
# those steps, unfused, took 4.6-5.0 ms against 4.4 fused at 8 rows.)
FAVOUR_PANELS = 1.25
# how many mask columns to add when the mask buffer is full (amortised growth, no per-step copy)
_MASK_ROOM = 256


class _MaskBuffer:
    """The (B, past + T) attention mask in a buffer with room to grow by one column per step."""

    def __init__(self, mask: torch.Tensor) -> None:
        self._buf, self.length = mask, mask.shape[1]

    @property
    def mask(self) -> torch.Tensor:
        return self._buf[:, : self.length]

    def append_ones(self) -> None:
        if self.length == self._buf.shape[1]:
            new = self._buf.new_zeros(self._buf.shape[0], self.length + max(_MASK_ROOM, self.length // 8))
            new[:, : self.length] = self._buf[:, : self.length]
            self._buf = new
        self._buf[:, self.length] = 1
        self.length += 1


def _decoder(model: nn.Module) -> nn.Module | None:
    """The tnlm decoder (DecoderModel) inside a causal LM, or None for a model from elsewhere."""
    from tnlm.models.decoder import DecoderModel  # lazily: importing tnlm.generation stays light

    inner = getattr(model, "model", None)
    return inner if isinstance(inner, DecoderModel) and hasattr(model, "lm_head") else None


def _family_step(decoder: nn.Module, shared: Layouts):
    """The per-layer step function for this decoder's family."""
    from tnlm.models.infini.modeling import InfiniModel
    from tnlm.models.transformer.modeling import TransformerModel
    from tnlm.models.transnormer.modeling import TransnormerModel

    if isinstance(decoder, TransnormerModel):
        return _TransnormerStep(decoder, shared)
    if isinstance(decoder, TransformerModel) and not isinstance(decoder, InfiniModel):
        return _TransformerStep(decoder, shared)
    return _GenericStep(decoder)


class FastDecodeState(DecodeState):
    """DecodeState with the fast one-token step for tnlm models (see the module docstring); same
    interface, same results. The prefill is the reference's forward, in chunks by default for TransNormer.
    compile=True: steps take the compiled step where it applies (compiled.py: TransNormer on CPUs in
    float32; 20-30 s to compile per batch size, then kept on disk for later processes), else the eager
    fast step."""

    def __init__(self, model: nn.Module, *, compile: bool = False) -> None:
        super().__init__(model)
        self.compile = compile
        self._step = fast_step(model)
        self._decoder = self._step.decoder if self._step is not None else None
        self._mask_buf: _MaskBuffer | None = None
        self._positions: torch.Tensor | None = None  # (B,) position of each row's next token

    @property
    def fast(self) -> bool:
        """Whether steps take the fast path (False for a model from outside tnlm)."""
        return self._step is not None

    @property
    def compile_s(self) -> float:
        """Seconds spent so far compiling (or loading kept) decode steps for this model, every batch size."""
        compiled = self._step.compiled if self._step is not None else None
        return sum(compiled.compile_s.values()) if compiled is not None else 0.0

    def extra_nbytes(self) -> int:
        """Bytes of the weight copies the fast step keeps for this model (see FastStep.extra_nbytes)."""
        return self._step.extra_nbytes() if self._step is not None else 0

    @property
    def default_chunk_size(self) -> int | None:
        """The prefill chunk when the caller gives none: PREFILL_CHUNK for TransNormer, else None (whole)."""
        from tnlm.models.transnormer.modeling import TransnormerModel

        return PREFILL_CHUNK if isinstance(self._decoder, TransnormerModel) else None

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """The reference's decoder over a chunk, then the LM head on the last position through the fast
        step's head, in its measured layout (the model's own F.linear reads the (V, d) rows at about half
        the rate: measured 5 ms of a 110 ms 512-token prefill on the issue-20 shape, against ~2 ms)."""
        if self._step is None:
            return super()._forward(ids, mask)
        out = self._decoder(input_ids=ids, attention_mask=mask, cache=self.cache, use_cache=True)
        self.cache = out.cache
        return _f32(self._step.head(out.last_hidden_state[:, -1].contiguous()))  # (B, V)

    def prefill(self, ids: torch.Tensor, mask: torch.Tensor, *, chunk_size: int | None = None) -> torch.Tensor:
        """As DecodeState.prefill; chunk_size None means default_chunk_size."""
        chunk = chunk_size if chunk_size is not None else self.default_chunk_size
        logits = super().prefill(ids, mask, chunk_size=chunk)
        self._mask_buf = _MaskBuffer(self.mask) if self.mask is not None else None
        self._positions = torch.tensor([len(t) for t in self.tokens], dtype=torch.long, device=self.device)
        return logits

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: (B,) one new token per sequence -> logits (B, V) for the token after it."""
        if self._step is None or self.cache is None:
            return super().step(tokens)
        if self._mask_buf is not None:
            self._mask_buf.append_ones()
            self.mask = self._mask_buf.mask
        for row, tok in zip(self.tokens, tokens.tolist()):
            row.append(tok)
        logits = self._step(tokens.to(self._positions.device), positions=self._positions, mask=self.mask, cache=self.cache,
                            compile=self.compile)
        self.cache.seen_tokens += 1
        self._positions += 1
        return logits


_STEPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def fast_step(model: nn.Module) -> FastStep | None:
    """The model's FastStep (one per model, shared by every state that decodes with it), or None for a
    model from outside tnlm."""
    if layouts.LAYOUT not in LAYOUTS:
        raise ConfigError(f"TNLM_DECODE_LAYOUT must be one of {', '.join(LAYOUTS)}, got {layouts.LAYOUT!r}")
    if _decoder(model) is None or not _own_modules(model):  # checked each time: peft injects layers in place
        return None
    step = _STEPS.get(model)
    if step is None:
        step = _STEPS[model] = FastStep(_decoder(model), model.lm_head)
    return step


def _own_modules(model: nn.Module) -> bool:
    """Whether every module of the model is torch's or tnlm's own. The step reads weights directly, so a
    layer replaced or wrapped by another library (peft's LoRA layers add their adapters to the product,
    quantised linears store other tensors) must take the reference path, which calls the modules."""
    return all(type(m).__module__.startswith(("torch.", "tnlm.")) for m in model.modules())


class FastStep:
    """One token per row through a tnlm causal LM: embed, the family's layer steps, final norm, LM head.
    The caller owns the cache, the (B,) positions and the (B, columns + 1) mask (None: no padding)."""

    def __init__(self, decoder: nn.Module, lm_head: nn.Linear) -> None:
        self.decoder = decoder  # no reference to the whole model: _STEPS must not keep it alive
        linears = [m.weight for m in decoder.modules() if isinstance(m, nn.Linear)] + [lm_head.weight]
        self.layouts = Layouts(sum(w.nbytes for w in {w.data_ptr(): w for w in linears}.values()))
        self.layers = _family_step(decoder, self.layouts)
        _mark_norms(decoder)
        self.head = Linears([lm_head], self.layouts)
        self.compiled = None  # CompiledSteps, made when a caller first asks for the compiled step
        self.widest = max(m.out_features for m in decoder.modules() if isinstance(m, nn.Linear))

    def extra_nbytes(self) -> int:
        """Bytes of the derived weight copies kept now: layouts that measured faster (layouts.py) and the
        weights frozen into compiled steps (compiled.py)."""
        return self.layouts.used + (self.compiled.nbytes() if self.compiled is not None else 0)

    @torch.inference_mode()
    def __call__(self, tokens: torch.Tensor, *, positions: torch.Tensor, mask: torch.Tensor | None, cache,
                 compile: bool = False) -> torch.Tensor:  # fmt: skip
        """tokens (B,), positions (B,) -> logits (B, V) float32; the cache is updated in place.
        compile=True: the compiled step for this batch size where it applies (compiled.py)."""
        if compile:
            if self.compiled is None:
                from tnlm.generation.compiled import CompiledSteps

                self.compiled = CompiledSteps(self.decoder, self.head.modules[0])
            logits = self.compiled(tokens, positions, cache)
            if logits is not None:
                return logits
        small = tokens.shape[0] * self.widest <= SERIAL_ELEMENTS and not isinstance(self.layers, _GenericStep)
        with layouts.serial() if small else nullcontext():
            return run_step(self.decoder, self.layers, self.head, tokens, positions, mask, cache)


def run_step(decoder: nn.Module, layers, head, tokens: torch.Tensor, positions: torch.Tensor, mask, cache) -> torch.Tensor:
    """embed, the family's layer steps, final norm, LM head (a Linears, or the nn.Linear itself for the
    compiled step's trace): tokens (B,) -> logits (B, V) float32."""
    x = decoder.embed_tokens(tokens)  # (B, d)
    if decoder.embed_scale != 1.0:
        x = x * decoder.embed_scale
    x = layers(x, positions=positions, mask=mask, cache=cache)
    return _f32(head(_norm(decoder.final_norm, x)))  # (B, V)


def _norm(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """module(x), with SRMSNorm and RMSNorm on float32 as one fused call: the reference's arithmetic
    (tnlm.ops.norm: x * rsqrt(mean(x^2) + eps), then the weight), one dispatch instead of five."""
    kind = getattr(module, "_fast_norm", None)
    if kind is None or x.dtype != torch.float32:
        return module(x)
    y = F.rms_norm(x, x.shape[-1:], eps=module.eps)
    return y if kind == "srms" else module.weight * y


def _mark_norms(model: nn.Module) -> None:
    """Flag the norm modules _norm may write out (imported here: tnlm.generation loads light)."""
    from tnlm.layers.norm import RMSNorm, SRMSNorm

    for m in model.modules():
        if type(m) in (SRMSNorm, RMSNorm):
            m._fast_norm = "srms" if type(m) is SRMSNorm else "rms"


def _elementwise_maps() -> set:
    from tnlm.layers.activations import FEATURE_MAPS

    return {FEATURE_MAPS[name] for name in ("silu", "relu", "sigmoid", "elu", "exp", "gelu")}


def _f32(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.float32 else x.float()


def _block_linears(block: nn.Module, shared: Layouts | None, favour_panels: tuple[float, float] = (1.0, 0.0),
                   **paths: str | tuple[str, ...]) -> dict:  # fmt: skip
    """name -> Linears of the block's submodule(s) at each dotted path (a tuple: fused, one input);
    shared None: _Plain products instead (what the compiled step traces)."""
    groups = {name: (path,) if isinstance(path, str) else path for name, path in paths.items()}
    if shared is None:
        return {name: _Plain([block.get_submodule(p) for p in group]) for name, group in groups.items()}
    return {name: Linears([block.get_submodule(p) for p in group], shared, favour_panels=favour_panels) for name, group in groups.items()}


class _Plain:
    """Linears' products on the modules' own weights, fused layers as one product on their concatenated
    weights: what the compiled step traces (compiled.py; the concatenation is folded when compiled)."""

    def __init__(self, modules: list[nn.Linear]) -> None:
        self.modules, self.sizes = tuple(modules), [m.out_features for m in modules]

    def __call__(self, x: torch.Tensor):
        mods = self.modules
        if len(mods) == 1:
            return F.linear(x, mods[0].weight, mods[0].bias)
        bias = None if mods[0].bias is None else torch.cat([m.bias for m in mods])
        return F.linear(x, torch.cat([m.weight for m in mods]), bias).split(self.sizes, -1)


class _TransnormerStep:
    """One token through every TransnormerBlock; the float32 states (B, H, Dk, Dv) update in place."""

    def __init__(self, decoder: nn.Module, shared: Layouts | None) -> None:
        self.blocks = list(decoder.layers)
        self.lam_m1 = [None] * len(self.blocks)  # (1, H, 1, 1) lambda - 1 per layer, as in the reference
        # feature maps that act elementwise may run on q and k together (one dispatch instead of two)
        elementwise = _elementwise_maps()
        self.act_qk_together = [block.token_mixer.act in elementwise for block in self.blocks]
        # the state update and read-out in one pass (ops/decode_kernels.py) where the C kernels built; the
        # compiled step's trace (shared None) keeps PyTorch's operators, which the compiler fuses itself
        kernels = shared is not None and decode_kernels.available()
        self.recurrence = _recurrence_fused if kernels else _recurrence
        # the whole layer in one C call (decode_kernels.TransnormerLayer) where its products are the panel
        # kernel's: per layer and batch-size bucket, (LAYOUT, what it was made from, the kernel). Where a layer
        # can fuse, its products favour the panel layout by FAVOUR_PANELS and a quarter (one product of four)
        # of the ~25 operators' dispatch the call saves
        self.fusable = [kernels and _fusable(block) for block in self.blocks]
        favour = (FAVOUR_PANELS, 25 / 4 * layouts.dispatch_seconds()) if any(self.fusable) else (1.0, 0.0)
        self.lin = [_block_linears(b, shared, favour if fusable else (1.0, 0.0), qkvu="token_mixer.qkvu_proj",
                                   out="token_mixer.out_proj", l12=("channel_mixer.l1", "channel_mixer.l2"),
                                   l3="channel_mixer.l3") for b, fusable in zip(self.blocks, self.fusable)]  # fmt: skip
        self.fused: list[dict[int, tuple[str, Watch, decode_kernels.TransnormerLayer]]] = [{} for _ in self.blocks]

    def _lam_m1(self, i: int, device: torch.device) -> torch.Tensor:
        lam = self.lam_m1[i]
        if lam is None or lam.device != device:
            mixer = self.blocks[i].token_mixer
            lam = self.lam_m1[i] = torch.expm1(mixer.log_decay(device).float()).view(1, -1, 1, 1)
        return lam

    def __call__(self, x: torch.Tensor, *, positions: torch.Tensor, mask, cache) -> torch.Tensor:
        owned = False  # whether x is this step's own tensor, which the fused layer may update in place
        for i, block in enumerate(self.blocks):
            state = cache.layers[i]
            if state.dtype != torch.float32 or not state.is_contiguous():
                state = cache.layers[i] = state.float().contiguous()
            fused = self._fused_layer(i, x) if self.fusable[i] else None
            if fused is not None:
                if not owned:
                    x, owned = x.contiguous().clone(), True
                full = layouts.threads()
                fused(x, positions.long().contiguous(), state, threads=full,
                      state_threads=full if state.numel() > SERIAL_ELEMENTS else 1)  # fmt: skip
                continue
            owned = False
            h = _norm(block.token_norm, x)
            lin = self.lin[i]
            x = x + self._mixer(block.token_mixer, lin, h, positions, state, self._lam_m1(i, x.device), self.act_qk_together[i])
            gate, value = lin["l12"](_norm(block.channel_norm, x))  # SGLU: l3(act(l1 h) * l2 h), one product for l1, l2
            act = block.channel_mixer.act
            x = x + lin["l3"]((gate if act is None else act(gate)) * value)
        return x

    def _fused_layer(self, i: int, x: torch.Tensor) -> decode_kernels.TransnormerLayer | None:
        """Layer i as one kernel call for x, when x is float32 on the CPU and each of the layer's products
        is bound to the panel kernel for this many rows (else None: the operators below). Checked each step
        by a Watch on the parameters the kernel reads; the products' own checks only when that fails."""
        bucket = layouts._bucket(x.shape[0])
        kept = self.fused[i].get(bucket)
        if kept is not None and kept[0] == layouts.LAYOUT and kept[1].current():
            return kept[2]
        self.fused[i].pop(bucket, None)
        if x.dtype != torch.float32 or x.device.type != "cpu":
            return None
        block, lin = self.blocks[i], self.lin[i]
        products = [lin[name].panels(x.shape[0]) for name in ("qkvu", "out", "l12", "l3")]
        if None in products:
            return None
        mixer = block.token_mixer
        watch = Watch([*(m for name in ("qkvu", "out", "l12", "l3") for m in lin[name].modules), block.token_norm,
                       mixer.norm, block.channel_norm, *([mixer.lrpe] if mixer.lrpe is not None else [])],
                      names=("weight", "bias", "theta"))  # fmt: skip
        theta = None if mixer.lrpe is None else mixer.lrpe.theta.detach()
        if theta is not None and (theta.dtype != torch.float32 or not theta.is_contiguous()):
            return None
        norm = lambda m: decode_kernels.Norm(getattr(m, "weight", None), m.eps)  # noqa: E731
        acts = _act_names()
        layer = decode_kernels.TransnormerLayer(
            heads=mixer.num_heads, qkvu=products[0], out=products[1], l12=products[2], l3=products[3],
            token_norm=norm(block.token_norm), mixer_norm=norm(mixer.norm), channel_norm=norm(block.channel_norm),
            theta=None if theta is None else theta.view(-1), lam_m1=self._lam_m1(i, x.device).view(-1),
            qk_act=acts[mixer.act], glu_act="none" if block.channel_mixer.act is None else acts[block.channel_mixer.act],
        )  # fmt: skip
        self.fused[i][bucket] = (layouts.LAYOUT, watch, layer)
        return layer

    def _mixer(self, mixer, lin: dict, h: torch.Tensor, positions: torch.Tensor, state: torch.Tensor, lam_m1, together: bool) -> torch.Tensor:
        """h (B, d) -> (B, d); state (B, H, Dk, Dv) updated in place."""
        B, H, hd = h.shape[0], mixer.num_heads, mixer.head_dim
        qkvu = lin["qkvu"](h)  # (B, 4 hidden): q, k, v, u
        hidden = H * hd
        qk, v, u = qkvu.split([2 * hidden, hidden, hidden], dim=-1)
        if together:
            q, k = mixer.act(qk).view(B, 2, H, hd).unbind(1)
        else:
            q, k = (mixer.act(t) for t in qk.view(B, 2, H, hd).unbind(1))
        v = v.view(B, H, hd)
        dtype = q.dtype
        q, k, v = _f32(q), _f32(k), _f32(v)
        if mixer.lrpe is not None:
            angle = positions.view(B, 1, 1).float() * mixer.lrpe.theta.view(H, hd).float()  # (B, H, hd)
            cos, sin = torch.cos(angle), torch.sin(angle)
            q, k = torch.cat([q * cos, q * sin], dim=-1), torch.cat([k * cos, k * sin], dim=-1)
            if dtype != torch.float32:  # the reference rounds LRPE's output to the model's dtype
                q, k = q.to(dtype).float(), k.to(dtype).float()
        o = _sized(state.numel(), self.recurrence if state.device.type == "cpu" else _recurrence, state, lam_m1, q, k, v)
        return lin["out"](u * _norm(mixer.norm, o if dtype == torch.float32 else o.to(dtype)))


def _fusable(block: nn.Module) -> bool:
    """Whether decode_kernels.TransnormerLayer computes this block: float32 SRMSNorm or RMSNorm norms,
    feature maps it knows, and every head on this process (not a tensor-parallel shard)."""
    from tnlm.layers.norm import RMSNorm, SRMSNorm

    mixer = block.token_mixer
    norms = (block.token_norm, mixer.norm, block.channel_norm)
    if any(type(n) not in (SRMSNorm, RMSNorm) or getattr(n, "weight", torch.empty(0)).dtype != torch.float32 for n in norms):
        return False
    acts = (mixer.act, block.channel_mixer.act)
    return all(a is None or a in _act_names() for a in acts) and mixer.heads == slice(0, mixer.num_heads)


@functools.cache
def _act_names() -> dict:
    """feature map function -> its name in decode_kernels.ACTIVATIONS (imported here: tnlm.generation loads light)"""
    from tnlm.layers.activations import FEATURE_MAPS

    return {FEATURE_MAPS[name]: name for name in decode_kernels.ACTIVATIONS}


def _sized(numbers: int, fn, *args):
    """fn(*args) on all threads when it works on more than SERIAL_ELEMENTS numbers, else on the step's."""
    return layouts.parallel(fn, *args) if numbers > SERIAL_ELEMENTS else fn(*args)


# S = S + (lambda - 1) S + k^T v in place on the state (B, H, Dk, Dv), then o = q S as (B, H * Dv): PyTorch's
# operators, and the same in one pass over the state (a C kernel; o summed in another order)
_recurrence = decode_kernels.decay_step_reference
_recurrence_fused = decode_kernels.decay_step


class _TransformerStep:
    """One token through every TransformerBlock; the rotary angles are computed once per step."""

    def __init__(self, decoder: nn.Module, shared: Layouts) -> None:
        self.blocks = list(decoder.layers)
        self.lin = [_block_linears(b, shared, qkv=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
                                   o="self_attn.o_proj", gate_up=("mlp.gate_proj", "mlp.up_proj"), down="mlp.down_proj")
                    for b in self.blocks]  # fmt: skip

    def __call__(self, x: torch.Tensor, *, positions: torch.Tensor, mask, cache) -> torch.Tensor:
        B = x.shape[0]
        x = x.unsqueeze(1)  # (B, 1, d): the attention code is the reference's
        pos = positions.view(B, 1)
        angles: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for i, block in enumerate(self.blocks):
            attn = block.self_attn
            h = _norm(block.input_layernorm, x).view(B, -1)
            lin = self.lin[i]
            q, k, v = lin["qkv"](h)  # one product in a derived layout
            q = q.view(B, 1, attn.num_heads, attn.head_dim)
            k = k.view(B, 1, attn.num_kv_heads, attn.head_dim)
            v = v.view(B, 1, attn.num_kv_heads, attn.head_dim)
            if attn.rotary is not None:
                key = id(attn.rotary.spec), attn.head_dim
                cs = angles.get(key)
                if cs is None:
                    cs = angles[key] = attn.rotary.cos_sin(pos)
                q, k = attn.rotary(q, cs), attn.rotary(k, cs)
            state = cache.layers[i]
            state.append(k, v)
            keys, values = state.k, state.v
            key_mask = None if mask is None else mask[:, -keys.shape[1] :].bool()[:, None, :]
            o = _sized(keys.numel(), _attention, q, keys, values, key_mask, attn.alibi_slopes(x.device))
            x = x + lin["o"](o.reshape(B, -1)).view(B, 1, -1)
            gate, up = lin["gate_up"](_norm(block.post_attention_layernorm, x).view(B, -1))
            x = x + lin["down"](F.silu(gate) * up).view(B, 1, -1)
        return x.squeeze(1)


def _attention(q, k, v, mask, slopes) -> torch.Tensor:
    from tnlm.ops.softmax import softmax_attention

    return softmax_attention(q, k, v, mask=mask, alibi_slopes=slopes)


class _GenericStep:
    """Any other tnlm family: its blocks' own forward on (B, 1, d), inputs built without a mask scan."""

    def __init__(self, decoder: nn.Module) -> None:
        self.decoder = decoder

    def __call__(self, x: torch.Tensor, *, positions: torch.Tensor, mask, cache) -> torch.Tensor:
        from tnlm.models.decoder import LayerInputs

        inputs = LayerInputs(positions=positions.view(-1, 1), attention_mask=mask, cu_seqlens=None, output_state=True)
        return self.decoder.run_layers(x.unsqueeze(1), inputs, cache=cache, hidden_states=None).squeeze(1)

