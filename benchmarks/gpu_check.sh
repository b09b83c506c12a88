#!/usr/bin/env bash
# Every GPU check of the Lightning Attention kernels in one call, for a lent GPU machine whose image
# has torch and triton but no network and no fla. Writes logs and results under $OUT (or ./gpu-out).
#
# Here, before the call (fla travels as wheels; .whl/ is git-ignored):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 -d .whl flash-linear-attention==0.6.0 fla-core==0.6.0 einops
# The call: run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=540)
# Some steps only: bash benchmarks/gpu_check.sh 2 4
set -u -o pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
want() { [ $# -eq 0 ] || [ -z "$STEPS" ] || [[ " $STEPS " == *" $1 "* ]]; }
STEPS="$*"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
# when the image's transformers predates the `cache=` outputs the models return, transformers 5 travels in
# .whl/ too (the wheels listed in gpu_train_check.sh); the carried wheels come first on the path
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
} 2>&1 | tee "$OUT/env.txt"

# 1. correctness: kernels against the O(T^2) reference, fp32 and bf16, and the fused SRMSNorm
want 1 && timeout 200 python3 -m pytest -q -p no:cacheprovider tests/ops/test_lightning_triton.py -k "gpu or cuda" 2>&1 \
    | tee "$OUT/tests.txt"

# 2. a tnl-tiny training step on the GPU (bf16) against the same step on the CPU (float32)
want 2 && timeout 120 python3 - <<'EOF' 2>&1 | tee "$OUT/model.txt"
import torch, tnlm
torch.manual_seed(0)
ids = torch.randint(3, 8192, (2, 300))
cpu = tnlm.create_model("tnl-tiny", seed=0)
gpu = tnlm.create_model("tnl-tiny", seed=0).to("cuda", torch.bfloat16)
ref = cpu(ids, labels=ids)
out = gpu(ids.cuda(), labels=ids.cuda())
ref.loss.backward(); out.loss.backward()
rel = lambda a, b: ((a.float().cpu() - b).norm() / b.norm()).item()
print(f"loss cpu {ref.loss.item():.5f} gpu {out.loss.item():.5f}; logits rel err {rel(out.logits, ref.logits):.2e}")
g_cpu = torch.cat([p.grad.flatten() for p in cpu.parameters()])
g_gpu = torch.cat([p.grad.float().flatten() for p in gpu.parameters()])
print(f"gradient rel err {rel(g_gpu, g_cpu):.2e}")
EOF

# 3. packed sequences off the segment grid, float32 on the GPU, through lightning_attn with each backend
#    forced, against the float64 reference on the CPU; and torch.compile(fullgraph=True) through the custom op
want 3 && timeout 200 python3 - <<'EOF' 2>&1 | tee "$OUT/backends.txt"
import torch
from tests.helpers import rel_err
from tests.helpers.triton_checks import naive_packed
from tnlm.ops.lightning import lightning_attn, lightning_backend
g = torch.Generator().manual_seed(0)
lengths, H, D = [700, 1500, 3, 1100], 4, 64
cu = torch.tensor([0, *lengths]).cumsum(0).cuda()
leaves = [torch.randn(1, sum(lengths), H, D, generator=g).cuda().requires_grad_() for _ in range(3)]
leaves.append(torch.randn(len(lengths), H, D, D, generator=g).cuda().requires_grad_())
a = -torch.logspace(0, -4, H).cuda()
def run(fn, q, k, v, s0, a, cu):
    o, f = fn(q, k, v, a, initial_state=s0, output_final_state=True, cu_seqlens=cu)
    w = torch.sin(torch.arange(o.numel(), device=o.device, dtype=o.dtype)).view(o.shape)
    return [o, f, *torch.autograd.grad((o * w).sum() + f.square().sum(), [q, k, v, s0])]
ref = run(naive_packed, *[x.detach().double().cpu().requires_grad_() for x in leaves], a.double().cpu(), cu.cpu())
for backend in ("chunk", "triton"):
    with lightning_backend(backend):
        got = run(lightning_attn, *leaves, a, cu)
        errs = {n: f"{rel_err(x.cpu(), y):.1e}" for n, x, y in zip(["o", "final", "dq", "dk", "dv", "ds0"], got, ref)}
        print(backend, "packed float32 on cuda vs float64 reference:", errs)
        q, k, v = (x.detach().requires_grad_() for x in leaves[:3])
        out = torch.compile(lambda q, k, v: lightning_attn(q, k, v, a)[0].square().sum(), fullgraph=True)(q, k, v)
        out.backward()
        eager = lightning_attn(q.detach(), k.detach(), v.detach(), a)[0].square().sum()
        print(backend, f"compiled fullgraph vs eager: {rel_err(out.detach(), eager):.1e}, grads finite:",
              bool(torch.isfinite(q.grad).all()))
        torch._dynamo.reset()
EOF

# 4. the benchmark: Triton vs SDPA flash vs fla chunk_simple_gla, bf16, B = 1, H = 8
want 4 && timeout 300 python3 benchmarks/attention.py --out "$OUT/attention" 2>&1 | tee "$OUT/attention.txt"
