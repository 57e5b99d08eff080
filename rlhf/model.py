"""A GPT written by hand: pre-LN blocks, learned positions, causal SDPA attention, GELU MLP, tied
embeddings, dropout; a preallocated KV cache; a scalar head for reward and value models; `generate`.

Shapes: B batch, T time (tokens in this call), S cache slots (prompt + new tokens), D n_embd,
H n_head, hs head size (D / H), V vocab size.

Padding. `mask` is (B, T), 1 on real tokens and 0 on padding. Prompts are LEFT-padded for
generation and responses RIGHT-padded, so one call may see both. Padding never changes a real
token's output: (1) a real query never attends to a pad key, and (2) positions count real tokens
only (position = number of real tokens before this one), so a row padded on the left sees the same
positions as the unpadded row. Pad queries attend to themselves only, so their (unused) outputs
stay finite.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, asdict

import torch
import torch.utils.checkpoint
import torch.nn as nn
import torch.nn.functional as F

from rlhf.padding import pack_rows


@dataclass
class GPTConfig:
    vocab_size: int = 1024
    block_size: int = 128  # longest sequence (prompt + response) the position table covers
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    dropout: float = 0.0

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if isinstance(getattr(self, name), bool) or not isinstance(getattr(self, name), int):
                raise ValueError(f"GPTConfig.{name} must be an int (got {getattr(self, name)!r})")
            if getattr(self, name) < 1:
                raise ValueError(f"GPTConfig.{name} must be >= 1 (got {getattr(self, name)})")
        if self.n_embd % self.n_head:
            raise ValueError(f"GPTConfig: n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1) (got {self.dropout})")

    def to_dict(self) -> dict:
        return asdict(self)

    def n_params(self) -> int:
        """Parameters of a GPT of this size (tied embedding): V*D + S*D + L*(12*D^2 + 13*D) + 2*D."""
        V, S, L, D = self.vocab_size, self.block_size, self.n_layer, self.n_embd
        return V * D + S * D + L * (12 * D * D + 13 * D) + 2 * D

    def training_bytes(self, rows: int, seq_len: int | None = None, logits: bool = True) -> int:
        """A deliberately loose lower bound on the memory one fp32 AdamW training step of `rows` sequences of
        `seq_len` tokens (default: the context) needs: weights, gradients and the two moments (16 bytes a parameter),
        the fp32 log-softmax and its gradient (2 x rows x T x V floats; logits=False for a scalar head) and each
        block's input (rows x T x D floats a layer, all activation checkpointing keeps). Used to refuse sizes no
        machine of this memory can hold, before anything is allocated (rlhf.device.check_memory)."""
        tokens = rows * min(seq_len or self.block_size, self.block_size)
        return 16 * self.n_params() + 4 * tokens * (2 * self.vocab_size * logits + self.n_layer * self.n_embd)


class KVCache:
    """Preallocated keys and values for every layer, plus which slots hold real tokens.

    k, v: (n_layer, B, H, S, hs); key_mask: (B, S) bool; n_real: (B,) real tokens seen per row
    (the position of the next real token); pos: slots filled so far (same for every row).
    """

    def __init__(self, cfg: GPTConfig, batch_size: int, max_len: int, device=None, dtype=torch.float32):
        hs = cfg.n_embd // cfg.n_head
        shape = (cfg.n_layer, batch_size, cfg.n_head, max_len, hs)
        # empty, not zeros: attention only ever reads the slots already written (:pos), so filling
        # 2 x n_layer x B x H x S x hs numbers with zeros first would be wasted work on every generate call
        self.k = torch.empty(shape, device=device, dtype=dtype)
        self.v = torch.empty(shape, device=device, dtype=dtype)
        self.key_mask = torch.zeros(batch_size, max_len, dtype=torch.bool, device=device)
        self.n_real = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.max_len = max_len
        self.pos = 0

    def keep(self, rows) -> None:
        """Keep only these batch rows (a (b,) index), in this order: generate drops rows that have finished. Copies the
        kept rows' keys and values; a row's keys and values are its own, so what the kept rows compute next does not change."""
        self.k, self.v = self.k.index_select(1, rows), self.v.index_select(1, rows)  # one copy (faster than the filled slots)
        self.key_mask, self.n_real = self.key_mask[rows], self.n_real[rows]


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.dropout = cfg.dropout
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x, attn_mask, cache: KVCache | None = None, layer: int = 0):
        B, T, D = x.shape
        q, k, v = self.c_attn(x).split(D, dim=2)
        q, k, v = (t.view(B, T, self.n_head, D // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, H, T, hs)
        if cache is not None:  # write this call's keys/values into their slots, attend over all filled slots
            p = cache.pos
            cache.k[layer, :, :, p:p + T] = k
            cache.v[layer, :, :, p:p + T] = v
            k, v = cache.k[layer, :, :, :p + T], cache.v[layer, :, :, :p + T]  # (B, H, S, hs)
        drop = self.dropout if self.training else 0.0
        if attn_mask is None:  # no padding, no cache: the fused causal kernel
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=drop)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=drop)
        y = y.transpose(1, 2).contiguous().view(B, T, D)  # (B, T, D)
        return self.resid_drop(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x):
        return self.drop(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = MLP(cfg)

    def forward(self, x, attn_mask, cache=None, layer=0):
        x = x + self.attn(self.ln_1(x), attn_mask, cache, layer)  # pre-LN residual
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Decoder-only transformer. `forward` gives logits, `hidden` the final-LN hidden states."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.h = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        # --grad-checkpoint: training forwards keep only each block's input and recompute the block during
        # backward (torch.utils.checkpoint, RNG state preserved so dropout matches): the same gradients for
        # about one extra forward, with activation memory of one block instead of n_layer
        self.grad_checkpoint = False
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by 1/sqrt(2 * n_layer)
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def hidden(self, idx, mask=None, cache: KVCache | None = None, segments=None):
        """idx (B, T) token ids, mask (B, T) or None (= all real) -> hidden states (B, T, D).

        segments (B, T) long, instead of mask: packed rows (rlhf.padding.pack_rows), several sequences one after
        another in a row, numbered 1, 2, ... and 0 on the padding after them. Each token attends to the earlier tokens
        of its own sequence only and its position counts from its sequence's first token, so a packed sequence's
        hidden states are those it has alone in a row (up to float rounding: other matrix shapes)."""
        B, T = idx.shape
        p = cache.pos if cache is not None else 0
        if p + T > self.config.block_size:
            raise ValueError(f"sequence of {p + T} tokens is longer than the model's context "
                             f"(block_size {self.config.block_size})")
        if cache is not None and p + T > cache.max_len:
            raise ValueError(f"KV cache holds {cache.max_len} slots, {p + T} needed")
        if segments is not None and (mask is not None or cache is not None):
            raise ValueError("segments (packed rows) replace mask and take no KV cache")
        real = torch.ones(B, T, dtype=torch.bool, device=idx.device) if mask is None else mask.bool()
        start = cache.n_real if cache is not None else torch.zeros(B, dtype=torch.long, device=idx.device)
        pos = (start[:, None] + real.long().cumsum(1) - 1).clamp(min=0)  # (B, T) real tokens before each
        # Right padding only (training batches, RM pairs): causality already keeps real tokens off the
        # pads that follow them, so the fused causal kernel can run without a mask.
        right_padded = mask is not None and cache is None and bool((real[:, 1:] <= real[:, :-1]).all())
        attn_mask = None
        if segments is not None:  # packed: causal within each sequence; a pad query attends to itself only
            col = torch.arange(T, device=idx.device)
            first = torch.cat([torch.ones_like(segments[:, :1], dtype=torch.bool), segments[:, 1:] != segments[:, :-1]], 1)
            pos = col - (col * first).cummax(1).values  # (B, T) tokens of its sequence before each
            same = (segments[:, :, None] == segments[:, None, :]) & (segments[:, None, :] > 0)  # (B, T, T)
            attn_mask = ((same & (col[None, :] <= col[:, None])) | torch.eye(T, dtype=torch.bool, device=idx.device))[:, None]
        elif (mask is not None and not right_padded) or cache is not None:
            keys = real if cache is None else torch.cat([cache.key_mask[:, :p], real], dim=1)  # (B, S)
            qi = torch.arange(T, device=idx.device)[:, None] + p  # (T, 1) slot of each query
            kj = torch.arange(p + T, device=idx.device)[None, :]  # (1, S)
            attn_mask = ((kj <= qi)[None] & keys[:, None, :]) | (kj == qi)[None]  # (B, T, S); self always
            attn_mask = attn_mask[:, None]  # (B, 1, T, S), broadcast over heads
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, D)
        checkpointed = self.grad_checkpoint and cache is None and torch.is_grad_enabled()
        for i, block in enumerate(self.h):
            if checkpointed:
                x = torch.utils.checkpoint.checkpoint(block, x, attn_mask, None, i, use_reentrant=False)
            else:
                x = block(x, attn_mask, cache, i)
        if cache is not None:
            cache.key_mask[:, p:p + T] = real
            cache.n_real += real.long().sum(1)
            cache.pos = p + T
        return self.ln_f(x)

    def forward(self, idx, mask=None, cache: KVCache | None = None, segments=None):
        """-> logits (B, T, V); the output projection is the token embedding (tied weights). segments: packed rows (hidden)."""
        return F.linear(self.hidden(idx, mask, cache, segments), self.wte.weight)


def last_token_index(mask):
    """mask (B, T) -> (B,) index of the last real token of each row (0 for an all-pad row)."""
    T = mask.shape[1]
    return (mask.bool().long() * torch.arange(1, T + 1, device=mask.device)).argmax(1)


class ScalarModel(nn.Module):
    """A GPT trunk plus a linear head giving one number per token: the reward model and the value model.

    `score` reads the head at the last real token (the reward); `values` reads it at every token
    (the value function). `shift` and `scale` are buffers so reward normalisation travels with the
    checkpoint: reward = (head(h) - shift) / scale.
    """

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.config = cfg
        self.gpt = GPT(cfg)
        self.head = nn.Linear(cfg.n_embd, 1)
        nn.init.normal_(self.head.weight, std=1.0 / math.sqrt(cfg.n_embd + 1))
        nn.init.zeros_(self.head.bias)
        self.register_buffer("shift", torch.zeros(()))
        self.register_buffer("scale", torch.ones(()))

    def read(self, h):
        """Hidden states (..., D) -> normalised head output (...), fp32 even under bf16 autocast (it feeds losses)."""
        with torch.autocast(h.device.type, enabled=False):  # the head's matmul itself in fp32, not only its output
            return (self.head(h.float()).squeeze(-1) - self.shift) / self.scale

    def values(self, idx, mask=None):
        """-> (B, T) head output at every token."""
        return self.read(self.gpt.hidden(idx, mask))

    def score(self, idx, mask, return_hidden: bool = False, pack: bool = False):
        """-> (B,) head output at the last real token (and that hidden state (B, D) if asked). pack: the trunk runs on
        the rows' real tokens packed into fewer rows (rlhf.padding.pack_rows; rows of right-padded real tokens): the
        same scores up to float rounding, on fewer token slots."""
        rows = torch.arange(idx.shape[0], device=idx.device)
        if pack:
            packed, segments, index = pack_rows(idx, mask, capacity=self.config.block_size)
            h = self.gpt.hidden(packed, segments=segments)  # (B', T', D)
            last = h.reshape(-1, h.shape[-1])[index[rows, last_token_index(mask)]]  # (B, D)
        else:
            h = self.gpt.hidden(idx, mask)  # (B, T, D)
            last = h[rows, last_token_index(mask)]  # (B, D)
        r = self.read(last)
        return (r, last) if return_hidden else r


def _filter_logits(logits, top_k: int | None, top_p: float | None):
    """Set logits outside the top-k and outside the top-p nucleus to -inf. logits (B, V)."""
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs > top_p  # mass before this token already exceeds p; keeps the top one
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return logits


@torch.inference_mode()
@torch.compiler.set_stance("force_eager")  # blocks compiled by --compile run eagerly here (see rlhf.precision)
def generate(model: GPT, prompt_ids, prompt_mask, max_new_tokens: int, eos_id: int, pad_id: int,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             generator: torch.Generator | None = None, compact: bool = True):
    """Sample responses with the KV cache.

    prompt_ids, prompt_mask: (B, Tq), left-padded. temperature 0 means greedy.
    Returns (response_ids (B, Tr), response_mask (B, Tr)): right-padded with pad_id after each row's
    EOS; the mask is 1.0 on generated tokens up to and including EOS. Tr <= max_new_tokens.

    Sampling uses the Gumbel-max trick with one (B, V) uniform draw per step from `generator`:
    argmax(logits / temperature + Gumbel noise) is a sample of softmax(logits / temperature), and a
    row's noise depends only on the generator state and its row index, so how much a row is padded
    never changes its sample.

    compact: rows that have emitted EOS leave the batch (and the KV cache) once they are a quarter of it, while
    COMPACT_MIN_ROWS or more rows remain, so the model runs only on unfinished rows. Each row's computation is its
    own (attention reads its own keys), so the samples are those of compact=False; only which rows share a matrix
    multiply changes, which on the CPUs measured (README, performance) leaves every number the same bit for bit.
    """
    B, Tq = prompt_ids.shape
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1 (got {max_new_tokens})")
    if Tq + max_new_tokens > model.config.block_size:
        raise ValueError(f"prompt ({Tq} tokens) + max_new_tokens ({max_new_tokens}) exceeds the model's "
                         f"context of {model.config.block_size} tokens")
    dev = prompt_ids.device
    # under bf16 autocast the keys and values come out in bf16: store them so, and attention sees one dtype
    dtype = torch.get_autocast_dtype(dev.type) if torch.is_autocast_enabled(dev.type) else model.wte.weight.dtype
    cache = KVCache(model.config, B, Tq + max_new_tokens, device=dev, dtype=dtype)
    out = torch.full((B, max_new_tokens), pad_id, dtype=torch.long, device=dev)
    rows = torch.arange(B, device=dev)  # (b,) the original row of each row still in the batch
    done = torch.zeros(B, dtype=torch.bool, device=dev)  # (b,)
    # prefill: the whole prompt through the model, but the output projection only at its last column
    logits = F.linear(model.hidden(prompt_ids, prompt_mask, cache)[:, -1], model.wte.weight).float()  # (b, V)
    n, sync_every = 0, 1 if dev.type == "cpu" else 8
    for t in range(max_new_tokens):
        if temperature == 0:
            tok = logits.argmax(-1)
        else:
            if temperature != 1.0:
                logits = logits / temperature
            logits = _filter_logits(logits, top_k, top_p)
            # the whole batch's draw, then the rows still in it: a row's noise never depends on which rows left.
            # In place: at vocab 8192 these (b, V) passes are a large share of a decode step (bench.py)
            u = torch.rand((B, logits.shape[1]), generator=generator, device=dev)
            u = (u if len(rows) == B else u[rows]).clamp_(1e-10, 1.0 - 1e-7)
            tok = (logits - u.log_().neg_().log_()).argmax(-1)  # (b,), Gumbel noise -log(-log u)
        tok = torch.where(done, torch.full_like(tok, pad_id), tok)
        out[rows, t] = tok
        n = t + 1
        done |= tok == eos_id
        # "every row stopped?" reads a GPU value back to the host: on CUDA only every 8th step (a few steps of
        # padding at most); on the CPU it costs nothing, and every step keeps the sampled widths as they were
        if t == max_new_tokens - 1 or ((t + 1) % sync_every == 0 and bool(done.all())):
            break
        live = ~done
        if compact and dev.type == "cpu":  # on the CPU the count costs nothing (on CUDA it would wait for the GPU)
            n_live = int(live.sum())
            if n_live >= COMPACT_MIN_ROWS and 4 * (len(rows) - n_live) >= len(rows):
                keep = live.nonzero().squeeze(1)  # (b',)
                cache.keep(keep)
                rows, done, tok, live = rows[keep], done[keep], tok[keep], live[keep]
        logits = model(tok[:, None], (live | (tok == eos_id))[:, None].float(), cache)[:, -1].float()
    out = out[:, :n]
    # mask: 1 up to and including the first EOS (or everywhere when the row never stopped)
    is_eos = (out == eos_id).long()
    after_eos = (is_eos.cumsum(1) - is_eos) > 0  # strictly after the first EOS
    return out, (~after_eos).float()


# generate(compact=True) keeps at least this many rows in a batch: below it a CPU matrix multiply may take another
# kernel, with other rounding, than at the batch's full size (measured: 12 rows and more shared one on a 2-core EPYC)
COMPACT_MIN_ROWS = 16
