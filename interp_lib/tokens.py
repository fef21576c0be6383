"""Action tokens and the model input whose last position makes the decision.

`action1` and `action2` tokenize to a shared prefix plus one differing token. The
model's choice is the next-token distribution after the prefix, so the input is the
chat-templated prompt followed by the prefix, and the decision position is the last
one. delta = logit[D] - logit[C] there (positive = pro-Defect).
"""

from __future__ import annotations

import hashlib

COOPERATE, DEFECT = "action1", "action2"
SWAPPED_SUFFIX = "_swapped"  # the sibling scenario (action1 = Defect) that `counterbalance` adds


class ActionTokenError(ValueError):
    pass


def get_action_token_ids(tokenizer, cooperate: str = COOPERATE, defect: str = DEFECT) -> dict:
    """`{'action1_tokens', 'action2_tokens', 'prefix', 'C', 'D'}` derived from the tokenizer."""
    c_ids = tokenizer.encode(cooperate, add_special_tokens=False)
    d_ids = tokenizer.encode(defect, add_special_tokens=False)
    if len(c_ids) != len(d_ids) or c_ids[:-1] != d_ids[:-1] or c_ids[-1] == d_ids[-1]:
        raise ActionTokenError(
            f"action strings {cooperate!r} -> {c_ids} and {defect!r} -> {d_ids} do not share all but "
            "their last token; the decision metric needs one differing token"
        )
    return {
        "action1_tokens": list(c_ids),
        "action2_tokens": list(d_ids),
        "prefix": list(c_ids[:-1]),
        "C": int(c_ids[-1]),
        "D": int(d_ids[-1]),
    }


def labelled_action_tokens(action_tokens: dict, labelling: str = "standard") -> dict:
    """The action tokens of a labelling: in "swapped" (action1 = Defect) C is action2's last
    token and D action1's, so delta = logit(D) - logit(C) stays pro-Defect."""
    if labelling == "standard":
        return action_tokens
    if labelling != "swapped":
        raise ValueError(f"labelling must be 'standard' or 'swapped', got {labelling!r}")
    return {**action_tokens, "C": action_tokens["D"], "D": action_tokens["C"]}


def chat_prompt(tokenizer, prompt: str) -> str:
    """The prompt as one user turn followed by the start of the model turn."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )


def decision_input_ids(tokenizer, prompt: str, action_tokens: dict | None = None) -> "torch.Tensor":
    """`[1, n_tokens]` ids: chat template (one BOS) + prompt + the actions' shared prefix."""
    import torch  # not at import time: the Snakefile reads this module's constants

    action_tokens = action_tokens or get_action_token_ids(tokenizer)
    text = chat_prompt(tokenizer, prompt)
    # A template that already writes BOS must not get a second one from the tokenizer.
    has_bos = tokenizer.bos_token is not None and text.startswith(tokenizer.bos_token)
    ids = tokenizer.encode(text, add_special_tokens=not has_bos)
    return torch.tensor([ids + action_tokens["prefix"]], dtype=torch.long)


def token_texts(tokenizer, input_ids) -> list[str]:
    """Each id decoded on its own (special tokens kept): what the cache stores as `tokens`."""
    return [tokenizer.decode([int(i)]) for i in input_ids]


def tokenizer_hash(tokenizer) -> str:
    """sha256 over the vocabulary, special tokens and chat template."""
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    else:
        h.update(repr(sorted(tokenizer.get_vocab().items())).encode())
    h.update(str(tokenizer.chat_template or "").encode())
    h.update(repr(sorted(tokenizer.special_tokens_map.items())).encode())
    return h.hexdigest()
