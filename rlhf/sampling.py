"""Batched rollouts with the KV cache, and log-probabilities of given responses in one forward.

Shapes: B batch, Tq query (prompt) length, Tr response length, V vocab.
Layout: queries are left-padded (B, Tq), responses right-padded (B, Tr); the full sequence is their
concatenation (B, Tq + Tr), so every response starts at column Tq. Response masks are 1.0 on
generated tokens up to and including EOS.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from rlhf import distributed
from rlhf.data import DataError, record_location
from rlhf.padding import pack_rows, pad_left
from rlhf.model import GPT, generate
from rlhf.tokenizer import too_long


@dataclass
class Rollout:
    prompts: list[str]
    texts: list[str]              # decoded responses (up to EOS)
    query_ids: torch.Tensor       # (B, Tq) left-padded
    query_mask: torch.Tensor      # (B, Tq)
    response_ids: torch.Tensor    # (B, Tr) right-padded
    response_mask: torch.Tensor   # (B, Tr)
    stopped: torch.Tensor         # (B,) bool: the response ended with EOS (not cut at max_new_tokens)


def encode_queries(tok, prompts: list[str], block_size: int, max_new_tokens: int):
    """Prompts -> left-padded (ids, mask); a prompt that leaves no room for the response is an error."""
    ids = tok.encode_prompts(prompts)
    for i in too_long(ids, max_new_tokens, block_size)[:1]:
        raise ValueError(f"prompt {i} is {len(ids[i])} tokens; with max_new_tokens={max_new_tokens} the model's "
                         f"context ({block_size}) leaves room for {block_size - max_new_tokens}: {prompts[i][:80]!r}")
    return pad_left(ids, tok.pad_id)


def check_prompts_fit(tok, prompts: list[str], block_size: int, max_new_tokens: int, path) -> None:
    """Refuse, before any work, a prompt that leaves no room for max_new_tokens in the context: DataError naming
    the file and line (prompts[i] must be the i-th record read_jsonl returned from `path`)."""
    ids = tok.encode_prompts(prompts)
    for i in too_long(ids, max_new_tokens, block_size)[:1]:
        raise DataError(f"{record_location(path, i)}: field 'prompt': {len(ids[i])} tokens (separator included), but the "
                        f"model's context of {block_size} tokens leaves {max(block_size - max_new_tokens, 0)} for the prompt "
                        f"with max_new_tokens={max_new_tokens}; shorten the prompt or lower --max-new-tokens")


@torch.inference_mode()
def sample(model: GPT, tok, prompts: list[str], max_new_tokens: int, temperature: float = 1.0,
           top_k: int | None = None, top_p: float | None = None, generator: torch.Generator | None = None,
           batch_size: int = 64, device=None, desc: str | None = None) -> Rollout:
    """Sample one response per prompt, `batch_size` prompts per generate call. Returns one Rollout, its tensors on
    `device` (None: the model's). The generator must live on that device too (it draws the sampling noise).
    desc: a progress bar (on stderr, rank 0 only, gone when done) over the generate calls, when there are two or more.

    Batches are padded to the longest prompt/response of the whole call so they concatenate.
    """
    device = model.wte.weight.device if device is None else device
    chunks = []
    starts = range(0, len(prompts), batch_size)
    bar = desc is not None and len(starts) > 1 and distributed.is_main()
    for s in tqdm(starts, desc=desc, leave=False, disable=not bar):
        q, qm = encode_queries(tok, prompts[s:s + batch_size], model.config.block_size, max_new_tokens)
        q, qm = q.to(device), qm.to(device)
        r, rm = generate(model, q, qm, max_new_tokens, tok.eos_id, tok.pad_id, temperature, top_k, top_p, generator)
        chunks.append((q, qm, r, rm))
    Tq = max(c[0].shape[1] for c in chunks)
    Tr = max(c[2].shape[1] for c in chunks)
    q = torch.cat([F.pad(c[0], (Tq - c[0].shape[1], 0), value=tok.pad_id) for c in chunks])
    qm = torch.cat([F.pad(c[1], (Tq - c[1].shape[1], 0)) for c in chunks])
    r = torch.cat([F.pad(c[2], (0, Tr - c[2].shape[1]), value=tok.pad_id) for c in chunks])
    rm = torch.cat([F.pad(c[3], (0, Tr - c[3].shape[1])) for c in chunks])
    stopped = ((r == tok.eos_id) & rm.bool()).any(1)
    r_host, m_host = r.cpu(), rm.cpu().bool()  # one copy from the device, not one per row
    texts = [tok.decode_response(row[m].tolist()) for row, m in zip(r_host, m_host)]
    return Rollout(list(prompts), texts, q, qm, r, rm, stopped)


def response_hidden(model: GPT, query_ids, query_mask, response_ids, response_mask, pack: bool = False):
    """Hidden states that predict each response token: column Tq - 1 + t of query + response predicts
    response token t. One forward. -> (B, Tr, D)

    pack: the forward runs on the rows' real tokens packed into fewer rows (rlhf.padding.pack_rows: each query +
    response is one run of real tokens, attending only within itself), then the states go back to this layout;
    the same states up to float rounding, on fewer token slots where responses vary in length. Padding positions
    get the state of an arbitrary real token (every caller masks them)."""
    Tq = query_ids.shape[1]
    ids = torch.cat([query_ids, response_ids], 1)  # (B, Tq + Tr)
    mask = torch.cat([query_mask, response_mask], 1)
    if not pack:
        return model.hidden(ids, mask)[:, Tq - 1:-1]  # (B, Tr, D)
    packed, segments, index = pack_rows(ids, mask, capacity=model.config.block_size)
    h = model.hidden(packed, segments=segments)  # (B', T', D)
    return h.reshape(-1, h.shape[-1])[index[:, Tq - 1:-1]]  # (B, Tr, D)


def response_logprobs(model: GPT, query_ids, query_mask, response_ids, response_mask, temperature: float = 1.0,
                      return_entropy: bool = False, value_head=None, pack: bool = False):
    """log pi(response token | everything before it), one forward over query + response.

    Returns (B, Tr) log-probs, 0 on padding; with return_entropy also the (B, Tr) entropy of each
    next-token distribution (detached: a statistic); with value_head (a module mapping (B, Tr, D) -> (B, Tr, 1)) also the
    values read from the same hidden states (a value head shared with the policy trunk). Logits are
    divided by the sampling temperature so the log-probs are those of the distribution that was sampled.
    pack: the forward on packed rows (response_hidden).
    """
    h = response_hidden(model, query_ids, query_mask, response_ids, response_mask, pack)  # (B, Tr, D)
    logits = F.linear(h, model.wte.weight).float()  # (B, Tr, V), tied output embedding; fp32 under bf16 autocast
    if temperature != 1.0:  # skipped at 1.0: a copy of the largest tensor of the step
        logits = logits / temperature
    logp_all = logits.log_softmax(-1)
    logp = logp_all.gather(-1, response_ids[..., None]).squeeze(-1) * response_mask  # (B, Tr)
    out = [logp]
    if return_entropy:
        with torch.no_grad():  # a statistic, never in a loss: no graph for two more (B, Tr, V) tensors
            out.append(-(logp_all.exp() * logp_all).sum(-1) * response_mask)  # (B, Tr)
    if value_head is not None:
        with torch.autocast(h.device.type, enabled=False):  # the shared value head in fp32, as ScalarModel.read
            out.append(value_head(h.float()).squeeze(-1) * response_mask)  # (B, Tr)
    return out[0] if len(out) == 1 else tuple(out)


def response_values(value_model, query_ids, query_mask, response_ids, response_mask, pack: bool = False):
    """V(s_t) for each response token t from a separate value model (a ScalarModel): its head read at
    the position that predicts token t. -> (B, Tr), 0 on padding. pack: as response_hidden."""
    h = response_hidden(value_model.gpt, query_ids, query_mask, response_ids, response_mask, pack)
    return value_model.read(h) * response_mask
