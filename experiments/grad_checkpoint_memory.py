"""Peak memory of one SFT training step with and without --grad-checkpoint, each in a fresh process (peak RSS on the
CPU; torch.cuda.max_memory_allocated on a GPU). The model is train_sft.py's small preset (8 layers, 512 wide) unless
given other sizes.

    python3 experiments/grad_checkpoint_memory.py [--device cpu|cuda] [--batch 32] [--seq 128]
"""
import argparse
import json
import subprocess
import sys

STEP = r"""
import json, resource, sys, torch
sys.path.insert(0, ".")
from rlhf.model import GPT, GPTConfig
from rlhf.sft import sft_loss
a = json.loads(sys.argv[1])
torch.manual_seed(0)
dev = torch.device(a["device"])
model = GPT(GPTConfig(vocab_size=1024, block_size=a["seq"], n_layer=a["layers"], n_head=8, n_embd=a["width"])).to(dev)
model.grad_checkpoint = a["ckpt"]
ids = torch.randint(0, 1024, (a["batch"], a["seq"]), device=dev)
mask = torch.ones_like(ids, dtype=torch.float)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if dev.type == "cuda":
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated() / 2**20
sft_loss(model(ids, mask), ids, mask).backward()
peak = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"peak_mib": peak, "before_step_mib": base if dev.type == "cuda" else base / 1024}))
"""


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--width", type=int, default=512)
    a = vars(p.parse_args())
    out = {}
    for ckpt in (False, True):
        r = subprocess.run([sys.executable, "-c", STEP, json.dumps({**a, "ckpt": ckpt})], capture_output=True, text=True, check=True)
        out[ckpt] = json.loads(r.stdout)
    kind = "peak GPU memory allocated" if a["device"].startswith("cuda") else "peak process RSS"
    for ckpt, m in out.items():
        print(f"grad_checkpoint={ckpt!s:<5}  {kind}: {m['peak_mib']:8.0f} MiB (before the step: {m['before_step_mib']:.0f} MiB)")
    print(f"saved by checkpointing: {out[False]['peak_mib'] - out[True]['peak_mib']:.0f} MiB "
          f"({a['layers']} layers x {a['width']} wide, batch {a['batch']} x {a['seq']} tokens, one forward + backward)")


if __name__ == "__main__":
    main()
