"""Byte-level BPE tokenizer (HF `tokenizers`), special tokens and the prompt/response template.

Template, as token ids:  prompt_ids + [SEP] + response_ids + [EOS]
    - `encode_prompt(p)`   -> ids of p, then SEP   (what the policy is conditioned on)
    - `encode_response(r)` -> ids of r, then EOS   (what the policy generates)
Each part is encoded on its own with a prefix space, so the boundary between prompt and response is
the same whatever the text, and the same word always gets the same tokens. Special-token strings inside the
text ("<|eos|>", "<|sep|>", "<|pad|>", GPT-2's "<|endoftext|>") are encoded as ordinary text.
The tokenizer is saved as `tokenizer.json` beside every checkpoint; a policy, its reference and its
reward model must share one (checked through `fingerprint`).
"""
from __future__ import annotations

import hashlib
from typing import Iterable

from tokenizers import Tokenizer as _HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

PAD, EOS, SEP = "<|pad|>", "<|eos|>", "<|sep|>"
SPECIALS = [PAD, EOS, SEP]
GPT2_EOS = "<|endoftext|>"  # a GPT-2 tokenizer's end-of-text token serves as EOS when it has no <|eos|> (rlhf/gpt2.py)


class Tokenizer:
    def __init__(self, tk: _HFTokenizer):
        self.tk = tk
        # User text always encodes as text: a literal "<|eos|>" in a response must not become the EOS id (SFT would
        # learn to stop there). Only the template inserts specials, by id. (Not saved in tokenizer.json, so the
        # fingerprint is unchanged.)
        tk.encode_special_tokens = True
        ids = [tk.token_to_id(s) for s in SPECIALS]
        if ids[1] is None:
            ids[1] = tk.token_to_id(GPT2_EOS)
        if any(i is None for i in ids):
            raise ValueError(f"tokenizer lacks the special tokens {SPECIALS} this project's template needs")
        self.pad_id, self.eos_id, self.sep_id = ids

    # construction and storage -------------------------------------------------------------------
    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 1024) -> "Tokenizer":
        """Train a byte-level BPE of `vocab_size` tokens (specials and the 256 bytes included)."""
        if vocab_size < 256 + len(SPECIALS) + 1:
            raise ValueError(f"vocab_size must be >= {256 + len(SPECIALS) + 1} for a byte-level BPE (got {vocab_size})")
        tk = _HFTokenizer(models.BPE())
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tk.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tk.train_from_iterator(texts, trainer=trainer)
        return cls(tk)

    @classmethod
    def from_json(cls, text: str) -> "Tokenizer":
        return cls(_HFTokenizer.from_str(text))

    def to_json(self) -> str:
        return self.tk.to_str()

    @property
    def vocab_size(self) -> int:
        return self.tk.get_vocab_size()

    @property
    def fingerprint(self) -> str:
        """Short hash of the vocabulary and merges: equal fingerprints encode text identically."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    # encoding -----------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return self.tk.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tk.encode_batch(list(texts), add_special_tokens=False)]

    def encode_prompt(self, prompt: str) -> list[int]:
        return self.encode(prompt) + [self.sep_id]

    def encode_prompts(self, prompts: list[str]) -> list[list[int]]:
        return [ids + [self.sep_id] for ids in self.encode_batch(prompts)]

    def encode_responses(self, responses: list[str], eos: bool = True) -> list[list[int]]:
        return [ids + [self.eos_id] if eos else ids for ids in self.encode_batch(responses)]

    def decode(self, ids) -> str:
        """Token ids -> text, special tokens dropped, the prefix space removed."""
        return self.tk.decode([int(i) for i in ids], skip_special_tokens=True).strip()

    def decode_response(self, ids) -> str:
        """Generated ids -> text: everything before the first EOS (pads and specials dropped)."""
        ids = [int(i) for i in ids]
        if self.eos_id in ids:
            ids = ids[:ids.index(self.eos_id)]
        return self.decode(ids)


def too_long(prompt_ids: list[list[int]], responses, block_size: int) -> list[int]:
    """The one "fits in the context" rule: indices i with len(prompt_ids[i]) + response length > block_size.

    responses: one int for every row (e.g. max_new_tokens, the room a rollout needs) or, per row, the
    response's ids (or its length). Prompt ids include the separator, response ids the EOS.
    """
    lengths = [responses] * len(prompt_ids) if isinstance(responses, int) else [r if isinstance(r, int) else len(r) for r in responses]
    return [i for i, (p, n) in enumerate(zip(prompt_ids, lengths)) if len(p) + n > block_size]
