#!/usr/bin/env bash
# The trainer's GPU checks in one device call: the throughput benchmark (float32 and bf16), two short
# training runs on the GPU (TransNormer with packed documents, bf16 autocast, activation checkpointing
# and torch.compile; the Transformer with windows), then the same benchmark on the machine's CPU cores.
# Writes logs and results under $OUT (or ./gpu-out).
#
# The runs need small token shards and their tokenizer in .devdata/ (git-ignored by its own .gitignore),
# e.g. the ones tests/training/conftest.py packs from Python's help topics:
#   mkdir -p .devdata && echo '*' > .devdata/.gitignore && cp -r CORPUS/packed CORPUS/tok .devdata/
# transformers 5.25 and its hub client as wheels, when the image's transformers is older (see the device notes):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
#       --platform manylinux_2_17_x86_64 -d .whl transformers==5.25.0 huggingface_hub==2.4.0 httpx2==2.16.2 \
#       httpcore2==2.16.2 truststore hf-xet==1.8.0 click==8.4.2
# The call: run(command="bash benchmarks/gpu_train_check.sh", carry=[".devdata", ".whl"], timeout_s=480)
set -u -o pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
LOG="$OUT/log.txt"
# an image whose transformers predates the `cache=` outputs the models return: newer wheels travel in .whl/
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
{
    git log -1 --oneline 2>/dev/null
    test -d src/tnlm/training || { echo "this tree has no src/tnlm/training"; exit 3; }
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name())"
} 2>&1 | tee "$LOG" || exit 3

echo "== 1. benchmark on the GPU" | tee -a "$LOG"
timeout 150 python3 benchmarks/train_throughput.py --out "$OUT/train_throughput_gpu" 2>&1 | tee -a "$LOG"

echo "== 2. training on the GPU" | tee -a "$LOG"
common=(data.path=.devdata/packed data.tokenizer=.devdata/tok log.progress=false eval.every=50 train.steps=150)
timeout 120 python3 -m tnlm train configs/train/tnl-tiny.yaml "${common[@]}" output=/tmp/runs/tnl data.mode=varlen \
    train.activation_checkpointing=true train.compile=true 2>&1 | tee -a "$LOG"
cp /tmp/runs/tnl/metrics.jsonl "$OUT/tnl_metrics.jsonl" 2>/dev/null
timeout 45 python3 -m tnlm train configs/train/transformer-tiny.yaml "${common[@]}" output=/tmp/runs/tf 2>&1 | tee -a "$LOG"
cp /tmp/runs/tf/metrics.jsonl "$OUT/tf_metrics.jsonl" 2>/dev/null
timeout 30 python3 -m tnlm generate /tmp/runs/tnl/model --prompt "The for statement" -n 30 --device cuda 2>&1 | tee -a "$LOG"

echo "== 3. benchmark on the CPU cores" | tee -a "$LOG"
CUDA_VISIBLE_DEVICES= timeout 120 python3 benchmarks/train_throughput.py --repeats 1 \
    --out "$OUT/train_throughput_cpu" 2>&1 | tee -a "$LOG"
