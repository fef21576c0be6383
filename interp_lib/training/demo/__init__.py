"""The embedded model family: a tiny Gemma-2 (same architecture, chat format and action
tokenization as Gemma-2-2b-it) pre-trained on IPD prompts, plus four LoRA adapters trained
by policy gradient against Tit-for-Tat with the rewards of NOTES.md section 1. Built
deterministically under a seed in a couple of minutes on CPU; no download needed. The
weights are bitwise reproducible on one CPU type; CPUs with other vector units (AVX2,
AVX-512) round differently and end at other weights, with the same behaviour targets met
(tests/test_demo_family.py builds it under a second kernel set too).

    build_base_model(out_dir, seed=0, pretrain_steps=None) -> stats
    train_adapter(base_dir, out_dir, reward, seed=0, rl_steps=None) -> stats
    ADAPTER_REWARDS: adapter name -> reward name

Importing this package is cheap (no torch): the training functions load lazily, so a
Snakefile can import ADAPTER_REWARDS at parse time.
"""

from .rewards import ADAPTER_REWARDS, REWARDS, get_reward, optimal_actions

__all__ = ["ADAPTER_REWARDS", "REWARDS", "build_base_model", "get_reward", "optimal_actions", "train_adapter"]


def __getattr__(name):
    if name == "build_base_model":
        from .pretrain import build_base_model

        return build_base_model
    if name == "train_adapter":
        from .rl import train_adapter

        return train_adapter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
