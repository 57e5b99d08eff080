"""GPT-2-format weights and tokenizer (rlhf/gpt2.py): import, export, errors, and logits against transformers."""
import json

import pytest
import safetensors.torch
import torch
from helpers import run
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from rlhf.checkpoint import CheckpointError, load_model, save_checkpoint
from rlhf.gpt2 import export_gpt2, from_gpt2_state_dict, gpt2_shapes, load_gpt2, to_gpt2_state_dict
from rlhf.gpt2 import main as gpt2_cli
from rlhf.model import GPT, GPTConfig
from rlhf.tokenizer import PAD, SEP, Tokenizer

P, D, L, H = 128, 32, 2, 2  # positions, width, layers, heads of the small random GPT-2


def gpt2_tokenizer_json() -> str:
    """A small tokenizer in GPT-2's layout: byte-level BPE without a prefix space, <|endoftext|> the last id."""
    tk = HFTokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(["reverse the letters a b c d", "sort the numbers 3 1 2", "copy the word hello"] * 20, trainer=trainer)
    tk.add_special_tokens(["<|endoftext|>"])
    return tk.to_str()


def random_gpt2(V: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict with GPT-2's names and shapes (Conv1D weights (in, out)) and its mask buffers."""
    g = torch.Generator().manual_seed(seed)
    sd = {k: torch.randn(s, generator=g) * 0.2 for k, s in gpt2_shapes(V, P, D, L).items()}
    for layer in range(L):
        sd[f"h.{layer}.attn.bias"] = torch.tril(torch.ones(1, 1, P, P))  # older files carry the causal mask
    return sd


def write_gpt2_dir(path, sd=None, config: dict | None = None):
    """model.safetensors + tokenizer.json (+ config.json) as a researcher would have them on disk."""
    path.mkdir(parents=True, exist_ok=True)
    tok = gpt2_tokenizer_json()
    V = HFTokenizer.from_str(tok).get_vocab_size()
    sd = random_gpt2(V) if sd is None else sd
    safetensors.torch.save_file(sd, str(path / "model.safetensors"))
    (path / "tokenizer.json").write_text(tok)
    (path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_head": H, "activation_function": "gelu_new",
                                                   **(config or {})}))
    return sd, V


def test_import_transposes_conv1d_weights():
    # GPT-2's Conv1D computes x @ W + b with W (in, out); our nn.Linear computes x @ W.T + b with W (out, in)
    sd = random_gpt2(V=50)
    ours, cfg = from_gpt2_state_dict(sd, n_head=H)
    assert (cfg.vocab_size, cfg.block_size, cfg.n_embd, cfg.n_layer, cfg.n_head) == (50, P, D, L, H)
    assert "h.0.attn.bias" not in ours  # the mask buffer is dropped, the c_attn bias kept
    assert torch.equal(ours["h.0.attn.c_attn.bias"], sd["h.0.attn.c_attn.bias"])
    model = GPT(cfg)
    model.load_state_dict(ours)
    x = torch.randn(3, D)
    conv1d = x @ sd["h.1.mlp.c_fc.weight"] + sd["h.1.mlp.c_fc.bias"]
    torch.testing.assert_close(model.h[1].mlp.c_fc(x), conv1d)
    back = to_gpt2_state_dict(model.state_dict())  # export: the exact inverse
    assert set(back) == set(gpt2_shapes(50, P, D, L)) and all(torch.equal(back[k], sd[k]) for k in back)
    # the tensors hold no head count: without a config.json, GPT-2's head size of 64 decides it
    wide = {k: torch.zeros(s) for k, s in gpt2_shapes(50, 8, 128, 1).items()}
    assert from_gpt2_state_dict(wide)[1].n_head == 2
    with pytest.raises(CheckpointError, match="not a multiple of GPT-2's head size 64"):
        from_gpt2_state_dict(sd)


def test_load_save_export_round_trip(tmp_path):
    sd, V = write_gpt2_dir(tmp_path / "gpt2")
    model, tok = load_gpt2(tmp_path / "gpt2")
    # the two specials our template needs are appended; <|endoftext|> is EOS
    assert (tok.pad_id, tok.sep_id, tok.vocab_size, model.config.vocab_size) == (V, V + 1, V + 2, V + 2)
    assert tok.eos_id == V - 1 and tok.tk.id_to_token(tok.eos_id) == "<|endoftext|>"
    assert tok.tk.id_to_token(V) == PAD and tok.tk.id_to_token(V + 1) == SEP
    wte = model.wte.weight.detach()
    assert torch.equal(wte[:V], sd["wte.weight"])
    torch.testing.assert_close(wte[V:], sd["wte.weight"].mean(0).expand(2, D))  # new rows: the mean embedding
    ids = tok.encode_prompt("reverse the letters a b") + tok.encode_responses(["d c b a"])[0]
    assert tok.decode_response(tok.encode_responses(["d c b a"])[0]) == "d c b a"

    # our checkpoint -> GPT-2 format -> back: the same tensors, and nothing is added the second time
    save_checkpoint(tmp_path / "ckpt", model.state_dict(), {"model": model.config.to_dict()}, kind="policy",
                    tokenizer_json=tok.to_json())
    export_gpt2(tmp_path / "ckpt", tmp_path / "exported")
    out = safetensors.torch.load_file(str(tmp_path / "exported" / "model.safetensors"))
    assert set(out) == set(gpt2_shapes(V + 2, P, D, L))
    assert all(torch.equal(out[k], sd[k]) for k in out if k != "wte.weight")
    assert torch.equal(out["wte.weight"][:V], sd["wte.weight"])
    hf_cfg = json.loads((tmp_path / "exported" / "config.json").read_text())
    assert (hf_cfg["n_head"], hf_cfg["n_positions"], hf_cfg["vocab_size"], hf_cfg["eos_token_id"]) == (H, P, V + 2, V - 1)
    again, tok2 = load_gpt2(tmp_path / "exported")
    assert tok2.fingerprint == tok.fingerprint and again.config == model.config
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values()))
    x = torch.tensor([ids])
    assert torch.equal(again(x), model(x))
    # a shorter context keeps the first positions only
    short, _ = load_gpt2(tmp_path / "gpt2", block_size=16)
    assert short.config.block_size == 16 and torch.equal(short.wpe.weight, sd["wpe.weight"][:16])


def test_bad_files_are_refused_with_the_key_and_shapes(tmp_path):
    sd = random_gpt2(V=50)
    bad = dict(sd, **{"h.1.attn.c_proj.weight": torch.zeros(D, D + 1)})
    with pytest.raises(CheckpointError, match=r"'h.1.attn.c_proj.weight' has shape \(32, 33\), expected \(32, 32\)"):
        from_gpt2_state_dict(bad, n_head=H)
    with pytest.raises(CheckpointError, match="missing GPT-2 key 'h.1.ln_2.bias'"):
        from_gpt2_state_dict({k: v for k, v in sd.items() if k != "h.1.ln_2.bias"}, n_head=H)
    with pytest.raises(CheckpointError, match="lm_head.weight' differs"):
        from_gpt2_state_dict(dict(sd, **{"lm_head.weight": torch.zeros(50, D)}), n_head=H)
    with pytest.raises(CheckpointError, match="not a GPT-2-format state dict"):
        from_gpt2_state_dict({"model.embed_tokens.weight": torch.zeros(3, 4)})
    write_gpt2_dir(tmp_path / "good")
    with pytest.raises(CheckpointError, match="--block-size 129 is longer than the model's 128 learned positions"):
        load_gpt2(tmp_path / "good", block_size=129)
    write_gpt2_dir(tmp_path / "gelu", config={"activation_function": "gelu"})
    with pytest.raises(CheckpointError, match="activation_function = 'gelu' is not supported"):
        load_gpt2(tmp_path / "gelu")
    (tmp_path / "notok").mkdir()
    (tmp_path / "notok" / "model.safetensors").write_bytes((tmp_path / "good" / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="no tokenizer.json"):
        load_gpt2(tmp_path / "notok")
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "pytorch_model.bin").write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(CheckpointError, match="pytorch_model.bin is a pickle file"):
        load_gpt2(tmp_path / "pickled")


def test_logits_match_transformers_gpt2(tmp_path):
    try:
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError:
        pytest.skip("transformers is not installed (it is never a requirement): the logits check against "
                    "GPT2LMHeadModel runs only where it is")
    V = HFTokenizer.from_str(gpt2_tokenizer_json()).get_vocab_size()
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=V, n_positions=P, n_embd=D, n_layer=L, n_head=H, resid_pdrop=0.0,
                                    embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=V - 1, eos_token_id=V - 1)).eval()
    hf.save_pretrained(tmp_path / "hf")  # transformer.* keys, tied lm_head, GPT2Config in config.json
    (tmp_path / "hf" / "tokenizer.json").write_text(gpt2_tokenizer_json())
    ours, tok = load_gpt2(tmp_path / "hf")
    ids = torch.randint(0, V, (3, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = hf(ids).logits
        got = ours(ids)[..., :V]  # the two added specials are extra columns
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    # and back: transformers loads our export and computes our logits, specials included
    save_checkpoint(tmp_path / "ckpt", ours.state_dict(), {"model": ours.config.to_dict()}, kind="policy",
                    tokenizer_json=tok.to_json())
    export_gpt2(tmp_path / "ckpt", tmp_path / "exported")
    hf2 = GPT2LMHeadModel.from_pretrained(tmp_path / "exported").eval()
    with torch.no_grad():
        torch.testing.assert_close(hf2(ids).logits, ours(ids), atol=1e-5, rtol=0)


def test_export_is_read_by_transformers_autotokenizer_and_sequence_classification(tmp_path):
    """The exported tokenizer_config.json makes AutoTokenizer give our ids, EOS, pad and separator (special-token
    strings inside text stay text, as here); an exported RM is a GPT2ForSequenceClassification with our scores,
    its bias, shift and scale folded in."""
    try:
        from transformers import AutoTokenizer, GPT2ForSequenceClassification
    except ImportError:
        pytest.skip("transformers is not installed (it is never a requirement): the export check runs only where it is")
    from rlhf.model import ScalarModel
    from rlhf.reward import pair_batch
    texts = ["reverse : a b c .", "Hello, World!", " two  spaces", "tab\tand\nnewline", "unicode é ü 中文 🙂",
             "a <|eos|> b", "<|sep|><|pad|>", "x<|endoftext|>", ""]
    tok = Tokenizer.train(texts * 20 + ["the quick brown fox jumps over the lazy dog"] * 50, vocab_size=300)
    torch.manual_seed(0)
    rm = ScalarModel(GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=16)).eval()
    with torch.no_grad():
        rm.head.bias.fill_(0.7)
        rm.shift.fill_(-0.3)
        rm.scale.fill_(2.5)
    save_checkpoint(tmp_path / "rm", rm.state_dict(), {"model": rm.config.to_dict(), "tokenizer": tok.fingerprint}, kind="rm",
                    tokenizer_json=tok.to_json())
    export_gpt2(tmp_path / "rm", tmp_path / "hf")
    hft = AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert [hft(t, add_special_tokens=False).input_ids for t in texts] == [tok.encode(t) for t in texts]
    assert (hft.eos_token_id, hft.pad_token_id, hft.sep_token_id) == (tok.eos_id, tok.pad_id, tok.sep_id)
    hf = GPT2ForSequenceClassification.from_pretrained(tmp_path / "hf").eval()
    ids, mask = pair_batch(tok, ["reverse : a b c .", "the fox"], ["c b a .", "jumps over the lazy dog"], ["a b .", "no"])
    with torch.no_grad():  # right-padded with <|pad|>: transformers reads the last non-pad token, our EOS
        torch.testing.assert_close(hf(input_ids=ids, attention_mask=mask.long()).logits[:, 0], rm.score(ids, mask),
                                   atol=1e-5, rtol=0)


def test_sft_and_rm_init_from_then_export_cli(tmp_path):
    write_gpt2_dir(tmp_path / "gpt2")
    data = tmp_path / "data"
    run("prepare_data.py", "--task", "algo", "--out", str(data), "--n-sft", "200", "--n-pairs", "200", "--n-rl", "8",
        "--n-unlabelled", "8", "--n-eval", "8")
    p = run("train_sft.py", "--preset", "smoke", "--init-from", str(tmp_path / "gpt2"), "--block-size", "96",
            "--data", str(data), "--out", str(tmp_path / "sft"), "--steps", "3", "--batch-size", "8", "--n-eval", "2",
            "--max-new-tokens", "8", "--threads", "1")
    assert "2 special tokens added" in p.stdout
    policy, tok, cfg = load_model(tmp_path / "sft" / "ckpt", "policy")
    assert (policy.config.n_embd, policy.config.n_layer, policy.config.block_size) == (D, L, 96)
    run("train_rm.py", "--preset", "smoke", "--init-from", str(tmp_path / "gpt2"), "--data", str(data),
        "--out", str(tmp_path / "rm"), "--epochs", "0.1", "--n-policy-pairs", "0", "--threads", "1")
    assert load_model(tmp_path / "rm" / "ckpt", "rm")[0].config.n_embd == D
    gpt2_cli(["export", str(tmp_path / "sft" / "ckpt"), str(tmp_path / "out")])  # python -m rlhf.gpt2 export CKPT OUT
    back, tok2 = load_gpt2(tmp_path / "out")
    x = torch.tensor([tok.encode_prompt("reverse the letters a b")])
    assert tok2.fingerprint == tok.fingerprint and torch.equal(back(x), policy(x))
    gpt2_cli(["export", str(tmp_path / "rm" / "ckpt"), str(tmp_path / "out2")])  # a reward model exports too
    hf_cfg = json.loads((tmp_path / "out2" / "config.json").read_text())
    assert hf_cfg["architectures"] == ["GPT2ForSequenceClassification"] and hf_cfg["num_labels"] == 1
    with pytest.raises(SystemExit, match="no such checkpoint directory"):
        gpt2_cli(["export", str(tmp_path / "nothing"), str(tmp_path / "out3")])
