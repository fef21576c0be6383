"""A small word-level tokenizer with Gemma-2's conventions, for the embedded model family.

Gemma-style special tokens (`<pad>`=0, `<eos>`=1, `<bos>`=2, `<unk>`=3, `<start_of_turn>`,
`<end_of_turn>`), Gemma-2's chat template, and a SentencePiece-like surface: "▁" marks a
preceding space (no prefix space at the start of a text), newlines are tokens of their own,
digits are split one by one and punctuation is isolated. So `action1` -> ["action", "1"] and
`action2` -> ["action", "2"]: a shared prefix plus one differing digit, as in Gemma.

The vocabulary is every piece of every text the prompt generator can produce (all states,
all orderings, with and without the temptation sentence), the answers and the template's
role names, in a fixed (sorted) order, so the tokenizer is identical on every build.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

from ... import prompts

SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
PAD, EOS, BOS, UNK, START_OF_TURN, END_OF_TURN = SPECIAL_TOKENS
# Gemma-2's chat template, verbatim (the `raise_exception` for a system role aside).
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<start_of_turn>"
    "{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{{ message['content'] | trim }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
ANSWERS = ("action1", "action2")


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split("\n", behavior="isolated"),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True),
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.Punctuation(behavior="isolated"),
        ]
    )


def corpus_texts() -> list[str]:
    """Every user-turn text the prompt generator can produce, the answers and the roles."""
    texts = []
    for own, opp, extra, (swap_open, swap_answer) in itertools.product(
        "CD", "CD", (None, prompts.TEMPTATION_SENTENCE), prompts.ORDERINGS
    ):
        texts.append(prompts.build_prompt(own, opp, extra, swap_open, swap_answer))
    texts += list(ANSWERS) + ["user", "model", "assistant", "system"]
    # Each digit and a space on its own, so any score or stray space is in the vocabulary.
    texts += [str(d) for d in range(10)] + [" x"]
    return texts


def build_tokenizer():
    """The `PreTrainedTokenizerFast` (deterministic: the vocabulary is sorted)."""
    from transformers import PreTrainedTokenizerFast

    pre = _pre_tokenizer()
    pieces = set()
    for text in corpus_texts():
        pieces.update(piece for piece, _ in pre.pre_tokenize_str(text))
    pieces.discard("▁x")
    pieces.discard("x")
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for piece in sorted(pieces):
        vocab.setdefault(piece, len(vocab))

    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    backend.pre_tokenizer = pre
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    # add_special_tokens=True prepends one BOS (as Gemma's tokenizer does); the chat template
    # writes its own BOS, so templated text is encoded with add_special_tokens=False.
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=PAD,
        additional_special_tokens=[START_OF_TURN, END_OF_TURN],
        padding_side="left",
        model_max_length=1024,
        clean_up_tokenization_spaces=False,
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def save_tokenizer(tokenizer, out_dir: str | Path) -> None:
    """`save_pretrained`, then names the generic fast-tokenizer class and inlines the chat
    template in tokenizer_config.json so that older transformers versions load it too."""
    tokenizer.save_pretrained(str(out_dir))
    path = Path(out_dir) / "tokenizer_config.json"
    cfg = json.loads(path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg["chat_template"] = CHAT_TEMPLATE
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
