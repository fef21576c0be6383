"""How many rows (patch sets, or steering rows) one batched forward pass takes on a GPU:
one budget for patching and steering. The budget is the device's memory less what this
process holds, not the driver's "free" (torch.cuda.mem_get_info): that moves with other
processes, and the batch size, through the kernels it selects, moves the last bits of every
result. The workflow runs one GPU job per device."""

from __future__ import annotations

CPU_BATCH_SIZE = 64  # patch sets per pass on a CPU: one layer's sets of any model fit
MAX_GPU_BATCH_SIZE = 1024
GPU_MEMORY_SHARE = 0.5  # of the free memory, for one pass's activations


def patch_row_bytes(cfg, d_mlp: int, T: int, positions: str = "all", head_site: str = "result") -> int:
    """Upper bound on the transient bytes one patch set (one batch row) needs in a patched
    pass over T positions, float32 throughout, for a model of ArchSpec `cfg` with MLP width
    `d_mlp`. Per position: a dozen d_model-wide tensors (residual, norms, q/k/v/o), three
    MLP-wide ones (gate, up, product), two rows of attention scores (scores, softmax) and,
    with head_site "result", the per-head outputs [H, d] twice (hook_result and its patched
    copy), which dominate at Gemma-2's widths."""
    Tq = 1 if positions == "decision" else T
    per_position = 12 * cfg.d_model + 3 * d_mlp + 2 * cfg.n_heads * T
    if head_site == "result":
        per_position += 2 * cfg.n_heads * cfg.d_model
    per_row = 4 * Tq * per_position
    if positions == "decision":  # each row's copy of the clean keys and values it attends to
        per_row += 4 * 2 * cfg.n_kv_heads * cfg.d_head * T
    return per_row


def gpu_batch_size(cfg, d_mlp: int, T: int, free_bytes: int, positions: str = "all",
                   head_site: str = "result") -> int:
    """Patch sets per pass that GPU_MEMORY_SHARE of `free_bytes` holds, rounded down to a
    power of two in [1, MAX_GPU_BATCH_SIZE]: a 27b-wide model gets fewer rows than a
    2b-wide one, so neither runs out of memory nor is starved."""
    rows = int(GPU_MEMORY_SHARE * free_bytes) // patch_row_bytes(cfg, d_mlp, T, positions, head_site)
    rows = max(1, min(MAX_GPU_BATCH_SIZE, rows))
    # A power of two: small changes in free memory between runs leave the batches, and so
    # the kernels' rounding, as they were.
    return 1 << (rows.bit_length() - 1)


def device_budget_bytes(device) -> int:
    """A CUDA device's total memory less what this process has allocated on it."""
    import torch

    return torch.cuda.get_device_properties(device).total_memory - torch.cuda.memory_allocated(device)


def device_rows(hooked, T: int, positions: str = "all", head_site: str = "result", device=None) -> int:
    """gpu_batch_size for a HookedModel's passes over prompts of T positions, with the budget
    of its CUDA device (or `device`) now (device_budget_bytes)."""
    d_mlp = hooked.model.config.intermediate_size
    budget = device_budget_bytes(hooked.device if device is None else device)
    return gpu_batch_size(hooked.cfg, d_mlp, T, budget, positions, head_site)
