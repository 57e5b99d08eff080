"""GPT-2-format weights and tokenizer from disk into this project's GPT, and back.

"GPT-2 format" is the layout of the public GPT-2 checkpoints as `model.safetensors` (OpenAI's GPT-2 as the
`transformers` library stores it), beside a `tokenizer.json` (the `tokenizers` library's format) and
optionally the library's `config.json`:

    wte.weight (V, D)   wpe.weight (P, D)   ln_f.{weight,bias} (D,)
    h.{l}.ln_1.{weight,bias} (D,)           h.{l}.ln_2.{weight,bias} (D,)
    h.{l}.attn.c_attn.weight (D, 3D)  .bias (3D,)     h.{l}.attn.c_proj.weight (D, D)  .bias (D,)
    h.{l}.mlp.c_fc.weight (D, 4D)     .bias (4D,)     h.{l}.mlp.c_proj.weight (4D, D)  .bias (D,)

Keys may carry a "transformer." prefix (a GPT2LMHeadModel saved by `save_pretrained`). GPT-2's linear
layers are `Conv1D`s whose weight is (in, out), used as x @ W; nn.Linear keeps (out, in), so the four
weights above are transposed on the way in and out. The causal-mask buffers `h.{l}.attn.bias` and
`h.{l}.attn.masked_bias` of older files are skipped; a `lm_head.weight` must equal `wte.weight` (tied).

Our model is GPT-2's architecture: pre-LN blocks, LayerNorm eps 1e-5, GELU with the tanh approximation
(GPT-2's "gelu_new"), biases everywhere, learned positions, attention scaled by 1/sqrt(head size), tied
output embedding. One difference, which does not change logits for unpadded input: our positions count
real tokens only (rlhf/model.py), GPT-2's count every column, so the two agree wherever no row is
left-padded. A config.json whose settings break that equality (another activation or LayerNorm eps,
scale_attn_by_inverse_layer_idx, untied embeddings) is refused rather than run with different logits.

The state dict holds no head count. It comes from config.json's "n_head" when there is one, otherwise
n_embd // 64: every released GPT-2 size has heads of 64.

Tokenizer (see `gpt2_tokenizer`): GPT-2's byte-level BPE, unchanged, with <|endoftext|> as EOS, plus the
two specials our template needs, <|pad|> and <|sep|>, appended as ids V_tok and V_tok + 1. Their
embedding rows (and any row for an id the file's embedding table lacks) start as the mean of the
original vocabulary's rows (Hewitt 2021, "Initializing new word embeddings for pretrained language
models"): with tied weights such a row's logit is then about the average logit, neither favoured nor
suppressed. <|pad|> is never a target and <|sep|> only ever an input, so SFT trains <|sep|>'s row.

Export (`export_gpt2`, or `python -m rlhf.gpt2 export CKPT OUT_DIR`) writes a policy checkpoint as
model.safetensors + config.json (a GPT2Config) + tokenizer.json + tokenizer_config.json, loadable by this module
and by `transformers.GPT2LMHeadModel.from_pretrained(OUT_DIR)` and `AutoTokenizer`; a reward model as
`GPT2ForSequenceClassification` (see `rm_to_gpt2_state_dict`). Shapes: V vocab, P positions, D n_embd, L layers.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import safetensors.torch
import torch

from rlhf.checkpoint import CheckpointError, _load_safetensors, _resolve, load_model
from rlhf.data import atomic_write_bytes, read_json, write_json
from rlhf.model import GPT, GPTConfig
from rlhf.tokenizer import EOS, GPT2_EOS, PAD, SEP, Tokenizer

CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")  # stored (in, out)
SKIPPED = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)")  # causal-mask buffers, not weights
GPT2_HEAD_SIZE = 64


def _layer_shapes(D: int) -> dict[str, tuple]:
    """GPT-2-format shapes of one block's tensors, by name inside the block."""
    return {"ln_1.weight": (D,), "ln_1.bias": (D,), "attn.c_attn.weight": (D, 3 * D), "attn.c_attn.bias": (3 * D,),
            "attn.c_proj.weight": (D, D), "attn.c_proj.bias": (D,), "ln_2.weight": (D,), "ln_2.bias": (D,),
            "mlp.c_fc.weight": (D, 4 * D), "mlp.c_fc.bias": (4 * D,), "mlp.c_proj.weight": (4 * D, D), "mlp.c_proj.bias": (D,)}


def gpt2_shapes(V: int, P: int, D: int, L: int) -> dict[str, tuple]:
    """Every tensor of a GPT-2-format state dict with its shape."""
    shapes = {"wte.weight": (V, D), "wpe.weight": (P, D), "ln_f.weight": (D,), "ln_f.bias": (D,)}
    for layer in range(L):
        shapes.update({f"h.{layer}.{k}": s for k, s in _layer_shapes(D).items()})
    return shapes


def _strip(sd: dict[str, torch.Tensor], where) -> dict[str, torch.Tensor]:
    """Drop the "transformer." prefix and the mask buffers; check a lm_head is the tied embedding."""
    out = {}
    for k, v in sd.items():
        k = k.removeprefix("transformer.")
        if SKIPPED.fullmatch(k):
            continue
        out[k] = v
    head = out.pop("lm_head.weight", None)
    if head is not None and ("wte.weight" not in out or not torch.equal(head, out["wte.weight"])):
        raise CheckpointError(f"{where}: 'lm_head.weight' differs from 'wte.weight'; this model ties its output "
                              "layer to the token embedding and cannot hold a separate one")
    return out


def from_gpt2_state_dict(sd: dict[str, torch.Tensor], n_head: int | None = None, dropout: float = 0.0,
                         where="state dict") -> tuple[dict[str, torch.Tensor], GPTConfig]:
    """A GPT-2-format state dict -> (our GPT's state dict, its GPTConfig), every name and shape checked.

    The sizes are read from the tensors: V and D from wte, P from wpe, L from the h.{l} blocks present.
    n_head defaults to D // 64 (GPT-2's head size). Weights become float32.
    """
    sd = _strip(sd, where)
    if "wte.weight" not in sd or "wpe.weight" not in sd:
        raise CheckpointError(f"{where}: not a GPT-2-format state dict (no 'wte.weight' / 'wpe.weight'; "
                              f"keys start {sorted(sd)[:4]})")
    (V, D), P = sd["wte.weight"].shape, sd["wpe.weight"].shape[0]
    layers = sorted({int(m.group(1)) for k in sd if (m := re.match(r"h\.(\d+)\.", k))})
    if layers != list(range(len(layers))):
        raise CheckpointError(f"{where}: transformer blocks {layers} are not numbered 0..{len(layers) - 1}")
    if n_head is None:
        if D % GPT2_HEAD_SIZE:
            raise CheckpointError(f"{where}: n_embd {D} is not a multiple of GPT-2's head size 64; give the head "
                                  "count in a config.json ('n_head') beside the weights")
        n_head = D // GPT2_HEAD_SIZE
    want = gpt2_shapes(V, P, D, len(layers))
    missing = [k for k in want if k not in sd]
    extra = [k for k in sd if k not in want]
    if missing or extra:
        raise CheckpointError(f"{where}: " + "; ".join([f"missing GPT-2 key {k!r}" for k in missing[:3]] +
                                                        [f"unexpected key {k!r}" for k in extra[:3]]))
    for k, shape in want.items():
        if tuple(sd[k].shape) != shape:
            raise CheckpointError(f"{where}: GPT-2 key {k!r} has shape {tuple(sd[k].shape)}, expected {shape} "
                                  f"(vocab {V}, positions {P}, n_embd {D})")
    try:
        cfg = GPTConfig(vocab_size=V, block_size=P, n_layer=len(layers), n_head=n_head, n_embd=D, dropout=dropout)
    except ValueError as e:
        raise CheckpointError(f"{where}: {e}") from None
    ours = {k: (v.t() if k.endswith(CONV1D) else v).float().contiguous() for k, v in sd.items()}
    return ours, cfg


def to_gpt2_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our GPT's state dict -> GPT-2 format (Conv1D weights transposed back), float32, contiguous."""
    return {k: (v.t() if k.endswith(CONV1D) else v).detach().float().contiguous() for k, v in sd.items()}


def check_hf_config(hf: dict, where) -> int | None:
    """Refuse a transformers config.json whose model would compute other logits than ours; -> its n_head."""
    def bad(key, value, ours):
        raise CheckpointError(f"{where}: {key} = {value!r} is not supported (this model has {ours})")
    if hf.get("model_type", "gpt2") != "gpt2":
        bad("model_type", hf["model_type"], "the GPT-2 architecture")
    if hf.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
        bad("activation_function", hf["activation_function"], "GELU with the tanh approximation, 'gelu_new'")
    if abs(float(hf.get("layer_norm_epsilon", 1e-5)) - 1e-5) > 1e-12:
        bad("layer_norm_epsilon", hf["layer_norm_epsilon"], "1e-5")
    for key in ("scale_attn_by_inverse_layer_idx", "add_cross_attention"):
        if hf.get(key):
            bad(key, hf[key], f"{key} false")
    if hf.get("scale_attn_weights", True) is False:
        bad("scale_attn_weights", False, "attention scaled by 1/sqrt(head size)")
    if hf.get("tie_word_embeddings", True) is False:
        bad("tie_word_embeddings", False, "tied input and output embeddings")
    n_head = hf.get("n_head", hf.get("num_attention_heads"))
    return int(n_head) if n_head is not None else None


def gpt2_tokenizer(tokenizer_json: str, where="tokenizer.json") -> tuple[Tokenizer, int]:
    """A GPT-2 tokenizer.json -> (our Tokenizer, how many ids it had before the added specials).

    <|pad|> and <|sep|> are added as special tokens when missing (and <|eos|> when the file has neither it
    nor <|endoftext|>); everything else, pre-tokenizer included, stays as the file has it.
    """
    from tokenizers import Tokenizer as _HFTokenizer
    try:
        tk = _HFTokenizer.from_str(tokenizer_json)
    except Exception as e:  # the tokenizers library's own exception type
        raise CheckpointError(f"{where}: cannot be read by the tokenizers library ({e})") from None
    n_before = tk.get_vocab_size()
    want = [PAD, SEP] + ([EOS] if tk.token_to_id(EOS) is None and tk.token_to_id(GPT2_EOS) is None else [])
    tk.add_special_tokens([s for s in want if tk.token_to_id(s) is None])
    return Tokenizer(tk), n_before


def resize_embeddings(sd: dict[str, torch.Tensor], vocab_size: int, new_ids: list[int], n_orig: int) -> dict:
    """Grow wte to `vocab_size` rows; rows `new_ids` (and any new row) become the mean of rows [0, n_orig)."""
    wte = sd["wte.weight"]
    mean = wte[:n_orig].mean(0)
    grown = torch.cat([wte, mean.expand(max(0, vocab_size - wte.shape[0]), -1)]) if vocab_size > wte.shape[0] else wte.clone()
    for i in new_ids:
        grown[i] = mean
    return {**sd, "wte.weight": grown.contiguous()}


def _locate(path) -> tuple[Path, Path, Path | None]:
    """PATH (a directory with model.safetensors, or a .safetensors file) -> (weights, tokenizer.json, config.json or None)."""
    p = Path(path)
    weights = p / "model.safetensors" if p.is_dir() else p
    if not weights.is_file():
        pickles = sorted(p.glob("*.bin")) if p.is_dir() else []
        hint = (f"; {pickles[0].name} is a pickle file, which this project never loads: convert it to safetensors"
                if pickles else "")
        raise CheckpointError(f"{path}: no GPT-2 weights found (expected a directory holding model.safetensors, "
                              f"or a .safetensors file){hint}")
    tok = weights.parent / "tokenizer.json"
    if not tok.is_file():
        raise CheckpointError(f"{path}: no tokenizer.json beside {weights.name} (GPT-2's tokenizer.json from the "
                              "`tokenizers` library is needed)")
    cfg = weights.parent / "config.json"
    return weights, tok, cfg if cfg.is_file() else None


def load_gpt2(path, block_size: int | None = None, dropout: float = 0.0) -> tuple[GPT, Tokenizer]:
    """Load a GPT-2-format model and its tokenizer from disk -> (GPT, Tokenizer) ready for our scripts.

    block_size: keep only the first block_size position embeddings (a shorter context uses less memory
    and changes no logits within it); None keeps the file's. The embedding table grows for the added
    special tokens (see the module docstring).
    """
    weights, tok_file, cfg_file = _locate(path)
    n_head = check_hf_config(read_json(cfg_file), cfg_file) if cfg_file else None
    sd, cfg = from_gpt2_state_dict(_load_safetensors(weights, "cpu"), n_head=n_head, dropout=dropout, where=weights)
    tok, n_orig = gpt2_tokenizer(tok_file.read_text(encoding="utf-8"), tok_file)
    if n_orig > cfg.vocab_size:
        raise CheckpointError(f"{tok_file}: the tokenizer has {n_orig} tokens but {weights} embeds only "
                              f"{cfg.vocab_size}: they do not belong together")
    new_ids = list(range(n_orig, tok.vocab_size))
    if new_ids:
        sd = resize_embeddings(sd, max(cfg.vocab_size, tok.vocab_size), new_ids, n_orig)
    if block_size is not None:
        if block_size > cfg.block_size:
            raise CheckpointError(f"{weights}: --block-size {block_size} is longer than the model's "
                                  f"{cfg.block_size} learned positions")
        sd["wpe.weight"] = sd["wpe.weight"][:block_size].contiguous()
    cfg = GPTConfig(**{**cfg.to_dict(), "vocab_size": sd["wte.weight"].shape[0],
                       "block_size": sd["wpe.weight"].shape[0]})
    model = GPT(cfg)
    model.load_state_dict(sd)
    print(f"loaded GPT-2-format model {weights}: {model.num_params() / 1e6:.1f}M parameters, {cfg.n_layer} layers, "
          f"{cfg.n_head} heads, n_embd {cfg.n_embd}, context {cfg.block_size}, vocab {cfg.vocab_size}"
          + (f" ({len(new_ids)} special tokens added)" if new_ids else ""))
    return model, tok


def hf_config(cfg: GPTConfig, tok: Tokenizer) -> dict:
    """The transformers GPT2Config (as JSON) describing our GPT: what `from_pretrained` needs."""
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": cfg.vocab_size,
            "n_positions": cfg.block_size, "n_ctx": cfg.block_size, "n_embd": cfg.n_embd, "n_layer": cfg.n_layer,
            "n_head": cfg.n_head, "n_inner": None, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
            "resid_pdrop": cfg.dropout, "embd_pdrop": cfg.dropout, "attn_pdrop": cfg.dropout,
            "initializer_range": 0.02, "scale_attn_weights": True, "tie_word_embeddings": True,
            "bos_token_id": tok.eos_id, "eos_token_id": tok.eos_id, "pad_token_id": tok.pad_id}


def hf_tokenizer_config(tok: Tokenizer, block_size: int) -> dict:
    """tokenizer_config.json that makes transformers.AutoTokenizer read tokenizer.json as it is (the generic fast
    tokenizer, not GPT-2's class with its own defaults), with our EOS, pad and separator tokens."""
    name = tok.tk.id_to_token
    return {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": name(tok.eos_id), "pad_token": name(tok.pad_id),
            "sep_token": name(tok.sep_id), "bos_token": None, "unk_token": None, "model_max_length": block_size,
            "clean_up_tokenization_spaces": False, "split_special_tokens": True}


def rm_to_gpt2_state_dict(rm) -> dict[str, torch.Tensor]:
    """A ScalarModel -> GPT2ForSequenceClassification's tensors (transformer.*, score.weight (1, D), no bias).

    Ours: reward = (w . h + b - shift) / scale with h = ln_f(x) at the last real token. transformers' head has no
    bias, so score.weight = w / scale and the constant c = (b - shift) / scale moves into ln_f's bias, which feeds the
    head alone: ln_f.bias += c * w' / (w' . w') adds exactly w' . delta = c to the score, and nothing else changes."""
    sd = {f"transformer.{k}": v for k, v in to_gpt2_state_dict(rm.gpt.state_dict()).items() if k != "lm_head.weight"}
    w = rm.head.weight.detach().float()[0] / rm.scale.float()  # (D,)
    c = (rm.head.bias.detach().float()[0] - rm.shift.float()) / rm.scale.float()
    sd["transformer.ln_f.bias"] = (sd["transformer.ln_f.bias"] + c * w / w.dot(w)).contiguous()
    sd["score.weight"] = w[None].contiguous()  # (1, D)
    return sd


def export_gpt2(ckpt, out_dir) -> Path:
    """Write a checkpoint in GPT-2 format: OUT_DIR/model.safetensors, config.json, tokenizer.json and
    tokenizer_config.json. A policy loads as transformers' GPT2LMHeadModel, a reward model as
    GPT2ForSequenceClassification (num_labels 1, the score read at the last non-pad token, which is our EOS)."""
    kind = read_json(_resolve(ckpt) / "config.json").get("kind")
    model, tok, _ = load_model(ckpt, "rm" if kind == "rm" else "policy")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"{out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    tensors = rm_to_gpt2_state_dict(model) if kind == "rm" else to_gpt2_state_dict(model.state_dict())
    atomic_write_bytes(out / "model.safetensors", [safetensors.torch.save(tensors, metadata={"format": "pt"})])
    cfg = hf_config(model.config, tok)
    if kind == "rm":
        cfg |= {"architectures": ["GPT2ForSequenceClassification"], "num_labels": 1, "id2label": {"0": "reward"},
                "label2id": {"reward": 0}, "problem_type": "regression"}
    write_json(out / "config.json", cfg)
    atomic_write_bytes(out / "tokenizer.json", [tok.to_json().encode("utf-8")])
    write_json(out / "tokenizer_config.json", hf_tokenizer_config(tok, model.config.block_size))
    return out


def main(argv=None) -> None:
    """python -m rlhf.gpt2 export CKPT OUT_DIR"""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3 or argv[0] != "export":
        sys.exit("usage: python -m rlhf.gpt2 export CKPT OUT_DIR   (a policy or reward model checkpoint -> GPT-2-format "
                 "model.safetensors, config.json, tokenizer.json, tokenizer_config.json)")
    try:
        out = export_gpt2(argv[1], argv[2])
    except ValueError as e:
        sys.exit(f"error: {e}")
    print(f"wrote {out}/model.safetensors, config.json, tokenizer.json, tokenizer_config.json")


if __name__ == "__main__":
    main()
