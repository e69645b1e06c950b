"""Precision: float32, or bfloat16 autocast where the processor computes it natively.

bfloat16 halves the bytes a matrix product reads and, on a processor with AVX-512 BF16 or AMX (or a GPU), doubles
its arithmetic; on one without, every product is emulated and autocast trains slower than float32 (an Intel Ice Lake:
2.3x slower). --precision auto, the default, takes bf16 only where it is native, and says which it took and why.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

PRECISIONS = ("auto", "fp32", "bf16")


def native_bf16(device: torch.device) -> bool:
    """Does this device compute bfloat16 natively? CPUs with AVX-512 BF16 or AMX do (recent Xeons, AMD Zen 4 and
    later); others emulate it, and there autocast trains slower than float32 (an Intel Ice Lake: 2.3x slower)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return False


def choose_precision(asked: str, device: torch.device, native=native_bf16) -> tuple[str, str]:
    """(fp32 or bf16, why): --precision auto takes bf16 only where the device computes it natively."""
    fast = native(device)
    if asked == "auto":
        if fast:
            return "bf16", f"bf16: {device.type} computes bfloat16 natively"
        return "fp32", f"fp32: this {device.type} has no native bfloat16, where autocast would train slower"
    if asked == "bf16" and not fast:
        return "bf16", f"bf16 as asked, but this {device.type} has no native bfloat16: expect it slower than fp32"
    return asked, f"{asked} as asked"


def decoding_precision(asked: str, device: torch.device) -> str:
    """Decoding on a CPU stays float32 under --precision auto: one token at a time, autocast's casts of every weight
    at every step cost more than bfloat16 saves (greedy over test2016 on two cores: 273 s in bf16, 13 s in fp32)."""
    if asked == "auto":
        return "bf16" if device.type == "cuda" and native_bf16(device) else "fp32"
    return asked


def autocast(device: torch.device, precision: str):
    """--precision bf16: the matrix products (the linear maps, Q K^T, the weights times V, the logits) run in
    bfloat16 under torch.autocast, on CPUs with AVX-512 BF16 or AMX and on CUDA GPUs alike. The weights, their
    gradients and Adam stay float32, and so does the residual stream: x + Dropout(Sublayer(x)) adds a bfloat16
    sub-layer output to a float32 x, so every LayerNorm reads and writes float32. fp32 changes nothing."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def loss_logits(logits: Tensor, precision: str) -> Tensor:
    """The loss takes its log-softmax over V in float32: in bfloat16 (8 bits of mantissa) it is only good to 2-3
    digits."""
    return logits.float() if precision == "bf16" else logits


def fuse_adam(optimizer: torch.optim.Adam, fused: bool) -> None:
    """Adam's fused update: one kernel over every tensor instead of a loop of small operations per tensor (the model
    has 16 per encoder layer and 26 per decoder layer, W^Q, W^K and W^V apart). It is the same update, rounded
    otherwise, so bf16 takes it and fp32 keeps the plain loop and its results bit for bit. Adam reads the flag from
    its parameter groups at every step; a loaded state dict brings the flag of the run that saved it."""
    for group in optimizer.param_groups:
        group["fused"] = fused or None  # None: PyTorch's default, the loop on a CPU
