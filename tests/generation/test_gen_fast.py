"""The fast decode step (FastDecodeState) against the reference (DecodeState): the same greedy tokens
and logits within 1e-5 for every family, with and without left padding, and across a chat's turns."""

from __future__ import annotations

import functools

import pytest
import torch

from tests.helpers.models import TINY_PRESETS, ScriptedLM, tiny_model
from tnlm.generation import ByteTokenizer, ChatSession, DecodeState, left_pad
from tnlm.generation import fast as fast_module
from tnlm.generation import layouts as layouts_module
from tnlm.generation.fast import FastDecodeState
from tnlm.models.registry import create_model
from tnlm.ops import decode_kernels

ATOL = 1e-5
# beyond the tiny presets: TransNormer with LayerNorm (which the one-call layer kernel does not compute), a
# bias, 1+elu, LRPE in most layers and SGLU's optional activation (odd sizes), a Transformer with ALiBi, grouped K/V heads and biases (the fused
# q/k/v and gate/up products concatenate them)
VARIANTS = {
    "tnl-odd": ("tnl-tiny", dict(decoder_embed_dim=60, hidden_dim=60, decoder_attention_heads=5, glu_dim=44,
                                 norm_type="layernorm", bias=True, linear_act_fun="1+elu",
                                 linear_use_lrpe_list=[1, 1, 0, 1], glu_act="silu")),
    # what the one-call layer kernel computes (decode_kernels.TransnormerLayer), with its options: RMSNorm
    # weights, biases, another feature map, LRPE in most layers, SGLU's activation, odd sizes
    "tnl-rms-odd": ("tnl-tiny", dict(decoder_embed_dim=44, hidden_dim=45, decoder_attention_heads=3, glu_dim=37,
                                     norm_type="rmsnorm", bias=True, linear_act_fun="gelu",
                                     linear_use_lrpe_list=[1, 0, 1, 1], glu_act="sigmoid")),
    "transformer-alibi-gqa": ("transformer-tiny", dict(position_embedding="alibi", num_key_value_heads=2,
                                                       attention_bias=True, mlp_bias=True)),
}  # fmt: skip
MODELS = [*TINY_PRESETS, *VARIANTS]


@functools.lru_cache(maxsize=None)
def _model(name: str) -> torch.nn.Module:
    if name in VARIANTS:
        preset, overrides = VARIANTS[name]
        return create_model(preset, overrides=overrides, seed=0).eval()
    return tiny_model(name)


def _forbid_forward(model: torch.nn.Module, monkeypatch) -> None:
    """After the prefill, the fast step must not go through the model's forward at all."""

    def refuse(*args, **kwargs):
        raise AssertionError("the fast step called model.forward")

    monkeypatch.setattr(model, "forward", refuse)


def _greedy(state, ids, mask, steps: int, *, teacher: list[torch.Tensor] | None = None):
    """Prefill, then `steps` steps; feeds `teacher`'s tokens when given, else its own argmax."""
    logits = [state.prefill(ids, mask, chunk_size=29)]
    tokens = []
    for i in range(steps):
        tok = teacher[i] if teacher is not None else logits[-1].argmax(-1)
        tokens.append(tok)
        logits.append(state.step(tok).clone())
    return tokens, logits


def _prompts(vocab: int, lengths: tuple[int, ...], seed: int):
    g = torch.Generator().manual_seed(seed)
    return left_pad([torch.randint(8, vocab, (n,), generator=g).tolist() for n in lengths], pad_id=0)


# the linear layers' weight layouts (layouts.LAYOUT): "rows" everywhere; the others where the step uses
# them (every family but Infini-attention, which takes its blocks' own forward), in fewer steps
LAYOUTS = [("rows", m) for m in MODELS] + [(lay, m) for lay in ("columns", "packed", "panels") for m in MODELS if "infini" not in m]


@pytest.mark.parametrize(("layout", "name"), LAYOUTS)
@pytest.mark.parametrize("lengths", [(37,), (41, 23, 30)], ids=["batch1", "left-padded"])
@torch.no_grad()
def test_fast_step_matches_reference(name: str, lengths: tuple[int, ...], layout: str, monkeypatch) -> None:
    monkeypatch.setattr(layouts_module, "LAYOUT", layout)
    model = _model(name)
    ids, mask = _prompts(model.config.vocab_size, lengths, seed=len(lengths))
    steps = 75 if layout == "rows" else 12  # Infini-attention (64-token segments) crosses a memory update
    ref_tokens, ref_logits = _greedy(DecodeState(model), ids, mask, steps)
    fast = FastDecodeState(model)
    assert fast.fast
    logits = [fast.prefill(ids, mask, chunk_size=29)]
    _forbid_forward(model, monkeypatch)
    fast_tokens = []
    for i in range(steps):
        fast_tokens.append(logits[-1].argmax(-1))
        logits.append(fast.step(ref_tokens[i]).clone())  # the reference's tokens: logits compare step by step
    for i, (a, b) in enumerate(zip(logits, ref_logits)):
        assert (a - b).abs().max().item() <= ATOL, f"step {i}"
    assert torch.equal(torch.stack(fast_tokens), torch.stack(ref_tokens))
    fed = [row[m.bool()].tolist() + [int(t[r]) for t in ref_tokens] for r, (row, m) in enumerate(zip(ids, mask))]
    assert fast.tokens == fed
    assert fast.cache.seen_tokens == ids.shape[1] + steps
    assert fast.mask is None if len(lengths) == 1 else torch.equal(fast.mask[:, -steps:], torch.ones(len(lengths), steps, dtype=fast.mask.dtype))


@pytest.mark.parametrize("name", MODELS)
@torch.no_grad()
def test_fast_state_continues_like_the_reference(name: str) -> None:
    """A state that holds tokens takes more (a chat's next turn): prefill, steps, prefill, steps."""
    model = _model(name)
    V = model.config.vocab_size
    turns = [_prompts(V, (n,), seed=10 + n)[0] for n in (19, 7, 70)]
    ref, fast = DecodeState(model), FastDecodeState(model)
    for turn in turns:
        a = ref.prefill(turn, torch.ones_like(turn))
        b = fast.prefill(turn, torch.ones_like(turn))
        assert (a - b).abs().max().item() <= ATOL
        for _ in range(12):
            tok = a.argmax(-1)
            assert torch.equal(b.argmax(-1), tok)
            a, b = ref.step(tok), fast.step(tok)
            assert (a - b).abs().max().item() <= ATOL
    assert fast.tokens == ref.tokens


@pytest.mark.parametrize("name", TINY_PRESETS)
def test_chat_turns_match_reference(name: str) -> None:
    model = _model(name)
    tok = ByteTokenizer()
    sessions = [ChatSession(model, tok, reference=ref) for ref in (True, False)]
    assert isinstance(sessions[0].new_state(), DecodeState) and not isinstance(sessions[0].new_state(), FastDecodeState)
    assert isinstance(sessions[1].new_state(), FastDecodeState)
    for text in ("Hello there", "And again?", "Third turn, a longer one."):
        replies = ["".join(s.send(text, max_new_tokens=10)) for s in sessions]
        assert replies[0] == replies[1]
    assert sessions[0].tokens == sessions[1].tokens


@torch.no_grad()
def test_model_from_outside_tnlm_takes_the_reference_step() -> None:
    model = ScriptedLM(script=[5, 6, 7])
    state = FastDecodeState(model)
    assert not state.fast
    logits = state.prefill(torch.tensor([[1, 2]]), torch.ones(1, 2, dtype=torch.long))
    assert logits.argmax(-1).item() == 5
    assert state.step(torch.tensor([5])).argmax(-1).item() == 6


@torch.no_grad()
def test_chunked_prefill_equals_one_shot(monkeypatch) -> None:
    """The fast state's default prefill of a long TransNormer prompt runs in chunks (counted here), and
    gives the one-shot prefill's logits and state."""
    import tnlm.generation.fast as fast_mod

    model = _model("tnl-odd")
    monkeypatch.setattr(fast_mod, "PREFILL_CHUNK", 45)
    ids, mask = _prompts(model.config.vocab_size, (203, 150), seed=7)
    one_shot = DecodeState(model)
    a = one_shot.prefill(ids, mask)
    calls = []
    forward = model.model.forward  # the fast state runs the decoder, then its own LM head on the last position
    monkeypatch.setattr(model.model, "forward", lambda *args, **kw: calls.append(1) or forward(*args, **kw))
    chunked = FastDecodeState(model)
    b = chunked.prefill(ids, mask)
    assert len(calls) == 5  # ceil(203 / 45)
    assert (a - b).abs().max().item() <= ATOL
    for sa, sb in zip(one_shot.cache.layers, chunked.cache.layers):
        assert (sa - sb).abs().max().item() <= ATOL * max(1.0, sa.abs().max().item())
    tok = a.argmax(-1)
    assert (one_shot.step(tok) - chunked.step(tok)).abs().max().item() <= ATOL


@pytest.mark.parametrize("command", ["generate", "chat"])
def test_cli_reference_flag_gives_the_same_text(command: str) -> None:
    from typer.testing import CliRunner

    from tnlm.cli.main import app

    args = [command, "tnl-tiny", "-n", "8"] + (["--prompt", "hello"] if command == "generate" else [])
    talk = "hello\nagain\n/exit\n" if command == "chat" else None
    runs = [CliRunner().invoke(app, args + flag, input=talk) for flag in ([], ["--reference"])]
    assert [r.exit_code for r in runs] == [0, 0], runs[0].output + runs[1].output
    assert runs[0].stdout == runs[1].stdout and runs[0].stdout.strip()


def test_passkey_reference_decoding_gives_the_same_answers() -> None:
    from tnlm.evaluation import load_eval_model
    from tnlm.evaluation.passkey import passkey_retrieval

    model = load_eval_model("tnl-tiny")
    runs = [passkey_retrieval(model, lengths=[256], depths=[0.5], trials=2, progress=False, reference_decoding=ref)
            for ref in (False, True)]  # fmt: skip
    assert [a["answer"] for a in runs[0].answers] == [a["answer"] for a in runs[1].answers]


@pytest.mark.parametrize("name", ["tnl-tiny", "transformer-tiny"])
@torch.no_grad()
def test_fast_step_matches_reference_in_bfloat16(name: str) -> None:
    """The fast step rounds where the reference rounds (LRPE output, attention output) in a half-precision model."""
    model = create_model(name, seed=0, dtype=torch.bfloat16).eval()
    ids, mask = _prompts(model.config.vocab_size, (12, 9), seed=3)
    ref_tokens, ref_logits = _greedy(DecodeState(model), ids, mask, 6)
    _, logits = _greedy(FastDecodeState(model), ids, mask, 6, teacher=ref_tokens)
    for a, b in zip(logits, ref_logits):
        assert (a - b).abs().max().item() <= 1e-3 * b.abs().max().item()  # below one bfloat16 step


@pytest.mark.parametrize("forced", ["columns", "packed", "panels"])
def test_layouts_are_measured_once_per_batch_bucket_and_follow_new_weights(forced: str, monkeypatch) -> None:
    """LAYOUT "auto": one measurement per layer and batch-size bucket, copies kept only for chosen
    layouts; a derived copy is rebuilt when the weights change (never read stale)."""
    model = create_model("tnl-tiny", seed=0).eval()
    ids, mask = _prompts(model.config.vocab_size, (5, 5), seed=3)
    state = FastDecodeState(model)
    state.prefill(ids, mask)
    step = fast_module.fast_step(model)
    assert step is state._step and step is fast_module.fast_step(model)  # one per model, shared by its states
    state.step(torch.tensor([9, 10]))
    state.step(torch.tensor([11, 12]))
    head = step.head
    assert set(head._choice) == {2} and head._choice[2] in {"rows", "columns", "packed", "panels"}
    assert set(head._copies) == {head._choice[2]} - {"rows"}
    monkeypatch.setattr(layouts_module, "LAYOUT", forced)
    state.step(torch.tensor([13, 14]))
    assert state.extra_nbytes() >= model.lm_head.weight.numel() * 4  # at least the head's copy
    with torch.no_grad():
        model.lm_head.weight.mul_(2.0)  # a changed head (tied: the embedding too)
    ref, fresh = DecodeState(model), FastDecodeState(model)
    ref.prefill(ids, mask)
    fresh.prefill(ids, mask)
    expected = ref.step(torch.tensor([9, 10]))
    assert (fresh.step(torch.tensor([9, 10])) - expected).abs().max().item() <= ATOL


def test_an_unknown_layout_is_refused_with_the_choices(monkeypatch) -> None:
    from tnlm.errors import ConfigError

    monkeypatch.setattr(layouts_module, "LAYOUT", "fastest")
    with pytest.raises(ConfigError, match="TNLM_DECODE_LAYOUT must be one of auto, rows, columns, packed, panels"):
        FastDecodeState(create_model("tnl-tiny", seed=0).eval())


def test_a_model_that_is_no_longer_used_is_freed() -> None:
    """The per-model fast step (and its weight copies) must not keep a model alive."""
    import gc
    import weakref

    model = create_model("tnl-tiny", seed=0).eval()
    state = FastDecodeState(model)
    ids, mask = _prompts(model.config.vocab_size, (4,), seed=1)
    state.prefill(ids, mask)
    state.step(torch.tensor([5]))
    gone = weakref.ref(model)
    del model, state
    gc.collect()
    assert gone() is None


def test_layouts_are_measured_once_per_shape_and_copies_stay_within_the_budget(monkeypatch) -> None:
    """Layers of one shape share a measurement; with no room for copies every layer reads its own
    weight (no copy) and the step still equals the reference."""
    measured = []
    original = layouts_module.Linears._measure
    monkeypatch.setattr(layouts_module.Linears, "_measure", lambda self, x: measured.append(self) or original(self, x))
    model = create_model("tnl-tiny", seed=0).eval()
    ids, mask = _prompts(model.config.vocab_size, (5, 5), seed=3)
    state = FastDecodeState(model)
    state.prefill(ids, mask)
    state.step(torch.tensor([9, 10]))
    shapes = {tuple(tuple(m.weight.shape) for m in lin.modules) for block in state._step.layers.lin for lin in block.values()}
    assert len(measured) == len(shapes | {(tuple(model.lm_head.weight.shape),)})  # not once per layer
    assert state.extra_nbytes() <= state._step.layouts.limit

    monkeypatch.setattr(layouts_module, "MAX_COPY_FRACTION", 0.0)
    model = create_model("tnl-tiny", seed=1).eval()
    ref, fast = DecodeState(model), FastDecodeState(model)
    ref.prefill(ids, mask)
    fast.prefill(ids, mask)
    for token in (9, 10, 11):
        expected = ref.step(torch.tensor([token, token]))
        assert (fast.step(torch.tensor([token, token])) - expected).abs().max().item() <= ATOL
    assert fast.extra_nbytes() == 0 and fast._step.layouts.limit == 0


def test_a_model_with_lora_layers_injected_takes_the_reference_step() -> None:
    """peft adds LoRA layers to the model in place: the fast step, which reads weights directly, would
    leave the adapters out, so such a model decodes with the reference (same logits as its forward)."""
    pytest.importorskip("peft")
    from tnlm.training.config import LoraSection
    from tnlm.training.finetune.lora import apply_lora

    model = create_model("tnl-tiny", seed=0).eval()
    apply_lora(model, LoraSection(dropout=0.0))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # adapters that change the output (peft starts them at zero)
    assert fast_module.fast_step(model) is None
    ids, mask = _prompts(model.config.vocab_size, (5, 5), seed=3)
    ref, fast = DecodeState(model), FastDecodeState(model)
    ref.prefill(ids, mask)
    fast.prefill(ids, mask)
    assert (fast.step(torch.tensor([9, 10])) - ref.step(torch.tensor([9, 10]))).abs().max().item() <= ATOL


@pytest.fixture
def two_threads():
    """torch on two threads for the test (serial() has nothing to do on one), restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


DEFAULT_SERIAL = fast_module.SERIAL_ELEMENTS


@pytest.mark.skipif(not layouts_module._openmp(), reason="serial() needs PyTorch's OpenMP backend (this build has another)")
@pytest.mark.parametrize("name", ["tnl-tiny", "tnl-odd", "tnl-rms-odd", "transformer-tiny"])
@pytest.mark.parametrize("serial_elements", [0, 2000, DEFAULT_SERIAL], ids=["all-parallel", "big-state-parallel", "default"])
@torch.no_grad()
def test_small_operators_run_on_one_thread_and_products_on_all(name: str, serial_elements: int, two_threads, monkeypatch) -> None:
    """A small batch's step runs its small operators on one thread, its products and any state or keys
    over SERIAL_ELEMENTS numbers on all (0: nothing serial; 2000: serial, but the tiny models' states and
    keys of this batch are larger), and gives the reference's logits in every arrangement."""
    monkeypatch.setattr(fast_module, "SERIAL_ELEMENTS", serial_elements)
    seen: dict[str, set[int]] = {"product": set(), "recurrence": set(), "attention": set(), "norm": set()}

    def spy(kind: str, fn):
        def wrapped(*args, **kwargs):
            seen[kind].add(torch.get_num_threads())
            return fn(*args, **kwargs)

        return wrapped

    product = layouts_module.Linears._product
    monkeypatch.setattr(layouts_module.Linears, "_product", lambda self, layout, x: spy("product", product(self, layout, x)))
    layer_call = decode_kernels.TransnormerLayer.__call__

    def fused_layer(self, x, positions, state, *, threads=None, state_threads=None):  # its threads as arguments
        seen["product"].add(threads)
        seen["recurrence"].add(state_threads)
        return layer_call(self, x, positions, state, threads=threads, state_threads=state_threads)

    monkeypatch.setattr(decode_kernels.TransnormerLayer, "__call__", fused_layer)
    monkeypatch.setattr(fast_module, "_recurrence", spy("recurrence", fast_module._recurrence))
    monkeypatch.setattr(fast_module, "_recurrence_fused", spy("recurrence", fast_module._recurrence_fused))
    monkeypatch.setattr(fast_module, "_attention", spy("attention", fast_module._attention))
    monkeypatch.setattr(fast_module, "_norm", spy("norm", fast_module._norm))
    model = _model(name)
    fast_module._STEPS.pop(model, None)  # a new step binds its products (through the spy)
    ids, mask = _prompts(model.config.vocab_size, (41, 23, 30), seed=5)
    ref_tokens, ref_logits = _greedy(DecodeState(model), ids, mask, 6)
    fast = FastDecodeState(model)
    for kind in seen:
        seen[kind].clear()  # the prefill is the model's forward, on the caller's threads
    _, logits = _greedy(fast, ids, mask, 6, teacher=ref_tokens)
    for i, (a, b) in enumerate(zip(logits, ref_logits)):
        assert (a - b).abs().max().item() <= ATOL, f"step {i}"
    serial = serial_elements > 0  # the tiny models' widest layer times 3 rows is under 2000
    big = "recurrence" if name.startswith("tnl") else "attention"
    assert seen["norm"] == ({1} if serial else {2})
    assert seen["product"] == {2}
    assert seen[big] == ({1} if serial_elements == DEFAULT_SERIAL else {2})
    assert torch.get_num_threads() == 2  # restored after every step


@pytest.mark.skipif(not layouts_module._openmp(), reason="serial() needs PyTorch's OpenMP backend (this build has another)")
def test_serial_restores_the_thread_count_after_an_error_and_parallel_is_plain_outside(two_threads) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with layouts_module.serial():
            assert torch.get_num_threads() == 1
            assert layouts_module.parallel(torch.get_num_threads) == 2
            assert torch.get_num_threads() == 1
            with layouts_module.serial():  # nested: stays serial, and leaving it does not end the outer one
                assert layouts_module.parallel(torch.get_num_threads) == 2
            assert torch.get_num_threads() == 1
            raise RuntimeError("boom")
    assert torch.get_num_threads() == 2
    assert layouts_module.parallel(torch.get_num_threads) == 2


def test_serial_does_nothing_without_the_openmp_backend(two_threads, monkeypatch) -> None:
    """PyTorch's native thread pool cannot be resized once started: serial() leaves the count alone there."""
    layouts_module._openmp.cache_clear()
    monkeypatch.setattr(torch.__config__, "parallel_info", lambda: "ATen parallel backend: native thread pool")
    try:
        with layouts_module.serial():
            assert torch.get_num_threads() == 2
    finally:
        layouts_module._openmp.cache_clear()


@pytest.mark.parametrize("name", ["tnl-tiny", "tnl-odd"])
@torch.no_grad()
def test_without_the_c_kernels_the_step_uses_pytorch_and_still_matches(name: str, monkeypatch) -> None:
    """No C compiler (or a failed build): the panels layout is not a candidate and the state update is
    PyTorch's; the step still equals the reference."""
    monkeypatch.setattr(decode_kernels, "available", lambda: False)
    model = _model(name)
    fast_module._STEPS.pop(model, None)
    ids, mask = _prompts(model.config.vocab_size, (33, 20), seed=9)
    ref_tokens, ref_logits = _greedy(DecodeState(model), ids, mask, 6)
    fast = FastDecodeState(model)
    _, logits = _greedy(fast, ids, mask, 6, teacher=ref_tokens)
    for a, b in zip(logits, ref_logits):
        assert (a - b).abs().max().item() <= ATOL
    step = fast._step
    assert step.layers.recurrence is fast_module._recurrence
    assert not any(step.layers.fusable) and step.layers.fused == [{}] * len(step.layers.blocks)
    assert all("panels" not in lin._choice.values() for block in step.layers.lin for lin in block.values())
    fast_module._STEPS.pop(model, None)  # later tests get a step with the kernels


@pytest.mark.skipif(not decode_kernels.available(), reason=f"decode kernels unavailable: {decode_kernels.unavailable()}")
@pytest.mark.parametrize(("name", "fused"), [("tnl-tiny", True), ("tnl-rms-odd", True), ("tnl-odd", False)])
@torch.no_grad()
def test_layers_run_as_one_kernel_call_where_their_products_are_panels(name: str, fused: bool, monkeypatch) -> None:
    """With the panel layout, a TransNormer layer runs as one call (decode_kernels.TransnormerLayer) from the
    step after its products were bound; LayerNorm (tnl-odd) keeps the operators. Both match the reference;
    new weights (a load between steps) make new kernels; another layout goes back to the operators."""
    monkeypatch.setattr(layouts_module, "LAYOUT", "panels")
    calls = []
    layer_call = decode_kernels.TransnormerLayer.__call__
    monkeypatch.setattr(decode_kernels.TransnormerLayer, "__call__", lambda self, *a, **k: calls.append(self) or layer_call(self, *a, **k))
    model = _model(name)
    fast_module._STEPS.pop(model, None)
    ids, mask = _prompts(model.config.vocab_size, (30, 19, 25), seed=11)
    ref_tokens, ref_logits = _greedy(DecodeState(model), ids, mask, 5)
    fast = FastDecodeState(model)
    _, logits = _greedy(fast, ids, mask, 5, teacher=ref_tokens)
    for i, (a, b) in enumerate(zip(logits, ref_logits)):
        assert (a - b).abs().max().item() <= ATOL, f"step {i}"
    layers = fast._step.layers
    n = len(layers.blocks)
    assert layers.fusable == [fused] * n
    assert len(calls) == (4 * n if fused else 0)  # the first step binds the products with the operators
    if not fused:
        return
    before = [kept[4][2] for kept in layers.fused]  # 3 rows: bucket 4
    original = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        with torch.no_grad():
            for block in model.model.layers:  # in place, as load_state_dict does: the copies are remade
                block.channel_mixer.l3.weight.mul_(0.5)
        ref = DecodeState(model)
        ref_first = ref.prefill(ids, mask)
        fast = FastDecodeState(model)
        assert (fast.prefill(ids, mask) - ref_first).abs().max().item() <= ATOL
        tok = ref_first.argmax(-1)
        for _ in range(3):
            a, b = ref.step(tok), fast.step(tok)
            assert (a - b).abs().max().item() <= ATOL
            tok = a.argmax(-1)
        assert all(kept[4][2] is not old for kept, old in zip(layers.fused, before))
        monkeypatch.setattr(layouts_module, "LAYOUT", "rows")  # no panels: the operators again
        calls.clear()
        for _ in range(2):
            a, b = ref.step(tok), fast.step(tok)
            assert (a - b).abs().max().item() <= ATOL
            tok = a.argmax(-1)
        assert calls == []
        monkeypatch.setattr(layouts_module, "LAYOUT", "panels")
        for _ in range(2):
            a, b = ref.step(tok), fast.step(tok)
            assert (a - b).abs().max().item() <= ATOL
            tok = a.argmax(-1)
        assert len(calls) == n  # the first step binds the products again, the second fuses
        if model.model.layers[0].channel_mixer.l3.bias is not None:  # a bias alone changed is seen too
            with torch.no_grad():
                for block in model.model.layers:
                    block.token_mixer.qkvu_proj.bias.add_(0.25)
            calls.clear()
            for _ in range(2):
                a, b = ref.step(tok), fast.step(tok)
                assert (a - b).abs().max().item() <= ATOL
                tok = a.argmax(-1)
            assert len(calls) == n
    finally:
        model.load_state_dict(original)
        fast_module._STEPS.pop(model, None)


def test_a_tensor_parallel_shard_is_not_fused() -> None:
    """A layer computing a slice of the heads (tensor parallelism) normalises across processes: the one-call
    kernel, which normalises over its own heads, must not take it."""
    model = create_model("tnl-tiny", seed=0).eval()
    block = model.model.layers[0]
    assert fast_module._fusable(block)
    block.token_mixer.shard_heads(0, 2)
    assert not fast_module._fusable(block)
