"""Pure tensor functions, no nn.Module, no config, no I/O: Lightning Attention (lightning/), softmax
attention (softmax.py), RoPE (rotary.py), Infini-attention's memory (infini.py), the norms (norm.py,
norm_triton.py for CUDA tensors), the decode step's few-row products and
fused state update (decode_kernels.py, C kernels built on first use). Each fast path has its reference beside it."""
