"""rlhf.checkpoint: exact resume, crash safety, and refusal of everything that is not our format."""
import json
import os
import random

import numpy as np
import pytest
import torch
from torch import nn

from rlhf.checkpoint import CheckpointError, check_state_dict, load_checkpoint, load_tokenizer_json, save_checkpoint
from rlhf.resume import load_train_state, resume, rng_state, save_step, set_rng_state


class Tiny(nn.Module):
    """Embedding -> Linear -> head tied to the embedding, like the GPT's lm_head / wte."""

    def __init__(self, d: int = 8, vocab: int = 11):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.lin = nn.Linear(d, d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.emb.weight  # tied: state_dict() holds the same tensor twice

    def forward(self, x):
        return self.head(torch.tanh(self.lin(self.emb(x))))


X = torch.arange(12).reshape(3, 4) % 11


def train_step(model, opt):
    loss = nn.functional.cross_entropy(model(X).flatten(0, 1), ((X + 1) % 11).flatten())
    opt.zero_grad()
    loss.backward()
    opt.step()


def make(seed=0):
    torch.manual_seed(seed)
    model = Tiny()
    return model, torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.8, 0.95), weight_decay=0.1)


def saved(tmp_path, kind="policy", **kw):
    model, opt = make()
    path = tmp_path / "ckpt"
    save_checkpoint(path, model.state_dict(), {"n_embd": 8}, kind, **kw)
    return path


def test_round_trip_then_resume_is_bitwise_exact(tmp_path):
    model, opt = make()
    train_step(model, opt)
    train_step(model, opt)
    path = tmp_path / "ckpt"
    save_step(path, 2, {"policy": model}, {"policy": opt}, {"n_embd": 8, "args": {"lr": 1e-2}}, '{"model": "bpe ✓"}')
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]  # no .tmp / .old left
    model2, opt2 = make(seed=1)  # different weights, fresh optimizer
    sd, config = load_checkpoint(path, expected_kind="policy")
    assert config == {"n_embd": 8, "args": {"lr": 1e-2}, "kind": "policy"}  # "_aliases" is internal
    assert sd["head.weight"] is sd["emb.weight"]  # the alias comes back as the same tensor
    assert resume(path, {"policy": model2}, {"policy": opt2}) == {"step": 2}
    assert load_tokenizer_json(path) == '{"model": "bpe ✓"}'
    for (k, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), k
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]  # betas is a tuple again
    for i in s1["state"]:
        for name, v in s1["state"][i].items():
            assert torch.equal(v, s2["state"][i][name]) and v.dtype == s2["state"][i][name].dtype, (i, name)
    train_step(model, opt)
    train_step(model2, opt2)
    for (k, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), k


def test_overwrite_and_state_optional(tmp_path):
    path = saved(tmp_path)
    assert load_tokenizer_json(path) is None
    with pytest.raises(CheckpointError, match="no state.json"):
        load_train_state(path)
    w = nn.Linear(2, 1)
    save_step(path, 5, {"value": w}, {}, {})
    assert load_checkpoint(path)[1]["kind"] == "value" and sorted(os.listdir(tmp_path)) == ["ckpt"]
    assert load_train_state(path)["step"] == 5
    with pytest.raises(CheckpointError, match="holds no state of the 'value' optimizer"):
        resume(path, {"value": w}, {"value": torch.optim.SGD(w.parameters(), lr=0.1)})


def test_wrong_kind_refused(tmp_path):
    path = saved(tmp_path, kind="rm")
    with pytest.raises(CheckpointError, match=r"ckpt: is a 'rm' checkpoint, expected 'policy'$"):
        load_checkpoint(path, expected_kind="policy")


def test_missing_and_incomplete_dirs(tmp_path):
    with pytest.raises(CheckpointError, match=r"nope: no such checkpoint directory$"):
        load_checkpoint(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"empty: not a checkpoint directory \(no model.safetensors\)$"):
        load_checkpoint(tmp_path / "empty")
    path = saved(tmp_path)
    os.remove(path / "config.json")
    with pytest.raises(CheckpointError, match=r"not a checkpoint directory \(no config.json\)$"):
        load_checkpoint(path)


@pytest.mark.parametrize("keep", [0, 5, 40, -3])
def test_truncated_safetensors_refused(tmp_path, keep):
    path = saved(tmp_path)
    f = path / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[:keep])
    with pytest.raises(CheckpointError, match=r"model.safetensors: truncated or corrupt safetensors file"):
        load_checkpoint(path)


def test_corrupt_header_refused(tmp_path):
    path = saved(tmp_path)
    f = path / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[8:12] = b"\x00\xff\x00\xff"
    f.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)


def test_pickle_refused(tmp_path):
    torch.save({"w": torch.ones(2)}, tmp_path / "model.pt")
    msg = "looks like a pickle file; this project loads safetensors \\+ JSON only, never pickle, so no code runs on load"
    with pytest.raises(CheckpointError, match=rf"model\.pt: {msg}$"):
        load_checkpoint(tmp_path / "model.pt")
    os.rename(tmp_path / "model.pt", tmp_path / "weights")  # no telling suffix: the bytes give it away
    with pytest.raises(CheckpointError, match=rf"weights: {msg}$"):
        load_checkpoint(tmp_path / "weights")
    d = tmp_path / "hf"
    d.mkdir()
    torch.save({"w": torch.ones(2)}, d / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=rf"pytorch_model\.bin: {msg}$"):
        load_checkpoint(d)
    path = saved(tmp_path)  # a pickle renamed to model.safetensors
    torch.save({"w": torch.ones(2)}, path / "model.safetensors")
    with pytest.raises(CheckpointError, match=rf"model\.safetensors: {msg}$"):
        load_checkpoint(path)


def test_crash_between_renames_loads_old(tmp_path):
    path = saved(tmp_path, tokenizer_json="{}")
    os.rename(path, tmp_path / "ckpt.old")  # the save died after path -> .old, before .tmp -> path
    with pytest.warns(UserWarning, match="interrupted"):
        sd, config = load_checkpoint(path, expected_kind="policy")
    assert config["kind"] == "policy" and "lin.weight" in sd
    with pytest.warns(UserWarning):
        assert load_tokenizer_json(path) == "{}"
    (tmp_path / "ckpt.tmp").mkdir()  # a half-written .tmp from the crash is discarded by the next save
    (tmp_path / "ckpt.tmp" / "junk").write_text("x")
    save_checkpoint(path, sd, config, "policy")
    assert sorted(os.listdir(tmp_path)) == ["ckpt"] and sorted(os.listdir(path)) == ["config.json", "model.safetensors"]


def test_non_contiguous_and_overlapping_tensors(tmp_path):
    base = torch.arange(12.0).reshape(3, 4)
    sd = {"t": base.t(), "row0": base[0], "row1": base[1]}
    save_checkpoint(tmp_path / "c", sd, {}, "value")
    out, _ = load_checkpoint(tmp_path / "c")
    assert all(torch.equal(out[k], v) for k, v in sd.items())


def test_rng_state_round_trip():
    gen = torch.Generator().manual_seed(3)

    def draws():
        return (random.random(), random.gauss(0, 1), np.random.rand(3).tolist(), torch.rand(3).tolist(),
                torch.rand(3, generator=gen).tolist())
    random.gauss(0, 1)  # leaves a cached gaussian in python's state
    state = rng_state({"data": gen})
    state = json.loads(json.dumps(state))  # it must survive state.json
    first = draws()
    draws()
    set_rng_state(state, {"data": gen})
    assert draws() == first
    with pytest.raises(CheckpointError, match="no RNG state saved for generator 'other'"):
        set_rng_state(state, {"other": torch.Generator()})


def test_check_state_dict_messages():
    model = Tiny()
    check_state_dict(model.state_dict(), model, "ck")  # fits
    sd = dict(Tiny(d=4).state_dict())
    with pytest.raises(CheckpointError, match=r"ck: parameter 'emb.weight' has shape \(11, 4\) in the checkpoint "
                                              r"but \(11, 8\) in the model — was it trained with another size\?"):
        check_state_dict(sd, model, "ck")
    sd = dict(model.state_dict())
    del sd["lin.bias"]
    sd["extra"] = torch.ones(1)
    with pytest.raises(CheckpointError, match=r"'lin.bias' is missing .*; the checkpoint has parameter 'extra'"):
        check_state_dict(sd, model, "ck")


def test_optimizer_shape_mismatch_refused(tmp_path):
    model, opt = make()
    train_step(model, opt)
    save_step(tmp_path / "c", 1, {"policy": model}, {"policy": opt}, {})
    torch.manual_seed(0)
    small = Tiny(d=4)
    sd = {k: v for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"'policy' optimizer state 'state.0.exp_avg' has shape \(11, 8\) but parameter 0"):
        resume(tmp_path / "c", {"policy": model}, {"policy": torch.optim.AdamW(small.parameters())})
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in sd.items())
