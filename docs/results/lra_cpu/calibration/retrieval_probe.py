"""Is the same-topic signal in the untrained towers' encodings? A logistic probe on [u*v, |u-v|] (cpu preset).

.venv/bin/python docs/results/lra_cpu/calibration/retrieval_probe.py   # ~1 min; prints spreads and probe accuracy
"""

import torch

from kernelized.data import lra
from kernelized.experiments import lra as exp

preset = exp.load_preset("lra", "cpu", defaults=exp.DEFAULTS)
runs = [r for r in exp.expand_grid(preset) if r.config["task"] == "retrieval" and r.config["kernel"] == "softmax"]
cfg = exp.resolve(runs[0].config)
torch.manual_seed(0)
m = exp.build_model(cfg).eval()
ds = lra.load_task("retrieval", "val", max_len=512, source="bbc-news", pairs_per_document=4)
x1, x2, y = ds.tensors[0][:128], ds.tensors[1][:128], ds.tensors[2][:128]
with torch.no_grad():
    u, v = m.tower.encode(x1), m.tower.encode(x2)
    print("u spread across docs / |u|:", (u.std(0).norm() / u.mean(0).norm()).item())
    d = (u - v).norm(dim=1)
    print("|u-v| same", d[y == 1].mean().item(), "diff", d[y == 0].mean().item(), "|u|", u.norm(dim=1).mean().item())
    feats = torch.cat([u, v, u * v, u - v], -1)
    print("feature spread", (feats.std(0).norm() / feats.mean(0).norm()).item())
    logits = m(x1, x2)
    print("logit spread", logits.std(0))
tr = lra.load_task("retrieval", "train", max_len=512, source="bbc-news", pairs_per_document=4)


def feats(ds, n):
    with torch.no_grad():
        a, b = m.tower.encode(ds.tensors[0][:n]), m.tower.encode(ds.tensors[1][:n])
    return torch.cat([a * b, (a - b).abs()], -1), ds.tensors[2][:n]


Xtr, ytr = feats(tr, 3000)
Xva, yva = feats(ds, 400)
mu, sd = Xtr.mean(0), Xtr.std(0) + 1e-6
Xtr = (Xtr - mu) / sd
Xva = (Xva - mu) / sd
W = torch.zeros(Xtr.shape[1], requires_grad=True)
b = torch.zeros(1, requires_grad=True)
opt = torch.optim.LBFGS([W, b], max_iter=200)


def clo():
    opt.zero_grad()
    l = torch.nn.functional.binary_cross_entropy_with_logits(Xtr @ W + b, ytr.float()) + 1e-3 * (W * W).sum()
    l.backward()
    return l


opt.step(clo)
print(
    "probe train acc",
    ((Xtr @ W + b > 0).long() == ytr).float().mean().item(),
    "val acc",
    ((Xva @ W + b > 0).long() == yva).float().mean().item(),
)
