"""Decision deltas of edited models, many conditions per batched forward pass.

A condition changes weights from its lowest edited layer s on, so its run starts from the
background model's cached resid_pre of layer s, at every position (a weight change alters
every position from there: the decision-position shortcut of patching does not apply).
Conditions of one background and start layer share a pass: at an edited layer the rows
are split by the weights they need (each split runs the block with its weights swapped in);
after the last edited layer every row has the background's weights and the rest of the
pass is `HookedModel.forward_from(..., rows=[C, D], last_only=True)`, as patching's.

Noise floor: the first pass from each background and start layer carries one unedited row
(the background recomputed from that layer, in that pass's shape); its |delta - cached
delta| is recorded in `controls`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..cache.prompt_activations import PromptActivations
from ..model.gpu_rows import CPU_BATCH_SIZE, device_rows
from .conditions import Condition, unedited
from .weights import EditableWeights


class EditRunner:
    """Edited deltas of one prompt. `backgrounds`: {"finetune": its adapter's name, "base":
    None}, whose weights every module an edit does not name keeps; `action_tokens`: the
    prompt's {"C": id, "D": id}. `batch_size`: rows per pass (None: CPU_BATCH_SIZE on a CPU,
    what half the GPU's memory holds on a GPU)."""

    def __init__(self, weights: EditableWeights, action_tokens: dict, backgrounds: dict,
                 batch_size: int | None = None):
        self.weights, self.hooked = weights, weights.hooked
        self.rows = [action_tokens["C"], action_tokens["D"]]
        self.backgrounds = backgrounds
        self.batch_size = batch_size

    def rows_per_pass(self, T: int) -> int:
        if self.batch_size is not None:
            return self.batch_size
        device = self.hooked.device
        if device.type != "cuda":
            return CPU_BATCH_SIZE
        return device_rows(self.hooked, T, "all", "z")

    def deltas(self, conditions: Sequence[Condition], prompts: dict[str, PromptActivations],
               controls: dict[str, dict] | None = None) -> np.ndarray:
        """[len(conditions)] edited deltas. `prompts`: background -> its cached run of this
        prompt. With `controls` (background -> {start layer: |delta - cached delta|}), the
        first pass from each background and start layer also carries an unedited row, whose
        deviation is recorded there (later passes from the same start add none)."""
        out = np.empty(len(conditions))
        L = self.hooked.n_layers
        groups: dict = {}
        for i, cond in enumerate(conditions):
            groups.setdefault((cond.background, cond.start(L)), []).append(i)
        for (background, start), members in groups.items():
            act = prompts[background]
            if start == L:  # nothing edited: the cached run itself
                out[members] = act.delta
                continue
            size = self.rows_per_pass(act.resid_pre.shape[1])
            control = controls is not None and start not in controls.setdefault(background, {})
            rows = list(members)
            while rows:
                take = size - 1 if control and size > 1 else size
                chunk, rows = rows[:take], rows[take:]
                batch = [conditions[i] for i in chunk] + ([unedited(background)] if control else [])
                got = self._run(batch, background, start, act)
                if control:
                    controls[background][start] = abs(float(got[-1]) - act.delta)
                    got, control = got[:-1], False
                out[chunk] = got
        return out

    def recompute(self, background: str, start: int, act: PromptActivations) -> float:
        """The background model's delta recomputed from its cached resid_pre of `start`
        (equals the cached delta up to float error and, for the fine-tune, the difference
        between base + update and its merged weights)."""
        return float(self._run([unedited(background)], background, start, act)[0])

    @torch.no_grad()
    def _run(self, batch: list[Condition], background: str, start: int, act: PromptActivations) -> np.ndarray:
        hooked, weights = self.hooked, self.weights
        L, default = hooked.n_layers, self.backgrounds[background]
        resid = act.resid_pre[start].expand(len(batch), -1, -1).contiguous()
        last = max(max(c.last() for c in batch), start - 1)
        try:
            for layer in range(start, last + 1):
                mods = weights.modules_of(layer)
                needs = [c.assignment(layer, mods, default) for c in batch]
                kinds = list(dict.fromkeys(needs))
                if len(kinds) == 1:
                    weights.set_layer(layer, kinds[0], mods)
                    resid = hooked.block(layer, resid)
                    continue
                out = torch.empty_like(resid)
                for need in kinds:
                    rows = [i for i, n in enumerate(needs) if n == need]
                    weights.set_layer(layer, need, mods)
                    out[rows] = hooked.block(layer, resid[rows])
                resid = out
            if last + 1 < L:
                weights.set_layers(range(last + 1, L), default)
                logits = hooked.forward_from(resid, last + 1, rows=self.rows, last_only=True, prune_last_block=True)
            else:
                logits = hooked.unembed(resid[:, -1], rows=self.rows)
        finally:
            weights.restore()
        return (logits[:, 1] - logits[:, 0]).float().cpu().numpy()
