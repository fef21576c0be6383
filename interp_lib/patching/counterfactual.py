"""Counterfactual prompts within one model: a source prompt (e.g. the opponent cooperated)
patched into a target prompt (the opponent defected) that aligns with it token for token.

Only the token ids at a few positions differ (the move words and the points); everything
else, including the decision position, is the same, so a patch at position p carries the
source's information about its token p into the target run.
"""

from __future__ import annotations

from typing import Callable, Sequence


class PromptAlignmentError(ValueError):
    pass


def differing_positions(source_ids: Sequence[int], target_ids: Sequence[int], what: str,
                        decode: Callable[[int], str] | None = None) -> list[int]:
    """Positions where two aligned prompts' token ids differ. Raises PromptAlignmentError,
    naming `what` and the first differing position, when their lengths differ or nothing differs."""
    src, tgt = [int(t) for t in source_ids], [int(t) for t in target_ids]
    diff = [p for p, (a, b) in enumerate(zip(src, tgt)) if a != b]
    if len(src) != len(tgt):
        first = diff[0] if diff else min(len(src), len(tgt))
        show = decode or str
        token = lambda ids: repr(show(ids[first])) if first < len(ids) else "(end of prompt)"  # noqa: E731
        raise PromptAlignmentError(
            f"{what}: the prompts do not align token for token ({len(src)} vs {len(tgt)} tokens); "
            f"first difference at position {first}: {token(src)} vs {token(tgt)}")
    if not diff:
        raise PromptAlignmentError(f"{what}: the source and target prompts are identical; nothing to patch")
    return diff
