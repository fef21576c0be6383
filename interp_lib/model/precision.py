"""Precision modes of the model-running jobs (caching, patching, AtP).

A mode fixes the dtype the weights are stored and multiplied in, the dtype of the
residual stream between blocks, and whether float32 matmuls may use TF32 tensor cores.
Whatever the mode, `HookedModel` reads out the decision (final norm, the two action
tokens' unembedding rows, softcap) in float32, and norm scales are float32.

    mode               weights   residual  matmuls
    float32            float32   float32   float32
    tf32               float32   float32   TF32 on CUDA (10-bit mantissa inputs); = float32 on CPU
    bfloat16           bfloat16  bfloat16  bfloat16 (float32 accumulation)
    bfloat16-resid32   bfloat16  float32   bfloat16; block outputs added to a float32 stream
    float16            float16   float16   float16 (Llama family only: Gemma overflows)

Measured trade-offs (speed, noise floor, ranking agreement with float32) are in
docs/measured.md (GPU and precision modes), from `benchmarks/gpu_workload.py --modes`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Precision:
    """A mode; dtypes are named as torch and safetensors name them ("bfloat16"). torch is
    imported only when a dtype is asked for, so the Snakefile can read modes cheaply."""

    name: str
    weights_name: str
    residual_name: str
    tf32: bool = False

    @property
    def weights(self):
        """torch dtype of the weights (and of attention and MLP compute)."""
        import torch

        return getattr(torch, self.weights_name)

    @property
    def residual(self):
        """torch dtype of the residual stream between blocks."""
        import torch

        return getattr(torch, self.residual_name)

    @contextlib.contextmanager
    def matmuls(self):
        """Sets CUDA's TF32 switches for this mode inside the block, restoring them after."""
        import torch

        cuda_matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = self.tf32
        torch.backends.cudnn.allow_tf32 = self.tf32
        try:
            yield self
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = cuda_matmul, cudnn


PRECISIONS = {
    p.name: p
    for p in (
        Precision("float32", "float32", "float32"),
        Precision("tf32", "float32", "float32", tf32=True),
        Precision("bfloat16", "bfloat16", "bfloat16"),
        Precision("bfloat16-resid32", "bfloat16", "float32"),
        Precision("float16", "float16", "float16"),
    )
}


def get_precision(name: "str | Precision") -> Precision:
    """The mode named `name` (a Precision passes through); ValueError naming the choices."""
    if isinstance(name, Precision):
        return name
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {name!r} (use one of {', '.join(PRECISIONS)})")
    return PRECISIONS[name]
