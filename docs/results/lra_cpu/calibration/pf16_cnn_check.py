"""The pf16 data is learnable: a small dilated CNN on the cpu tier's Pathfinder images (seed 0, 20,000 images).

.venv/bin/python docs/results/lra_cpu/calibration/pf16_cnn_check.py    # ~80 s on 2 cores; prints epoch, loss, test acc
"""

import time

import torch
import torch.nn as nn

from kernelized.data.pathfinder import PathfinderConfig, generate

torch.manual_seed(0)
torch.set_num_threads(2)
t = time.time()
X, y = generate(20000, seed=0, config=PathfinderConfig.preset("pf16"))
print("gen", time.time() - t, y.mean())
X = torch.tensor(X, dtype=torch.float32)[:, None] / 255.0
y = torch.tensor(y)
Xtr, ytr, Xte, yte = X[:18000], y[:18000], X[18000:], y[18000:]
net = nn.Sequential(
    nn.Conv2d(1, 32, 3, padding=1),
    nn.ReLU(),
    nn.Conv2d(32, 32, 3, padding=1),
    nn.ReLU(),
    nn.Conv2d(32, 32, 3, padding=2, dilation=2),
    nn.ReLU(),
    nn.Conv2d(32, 32, 3, padding=2, dilation=2),
    nn.ReLU(),
    nn.Conv2d(32, 32, 3, padding=4, dilation=4),
    nn.ReLU(),
    nn.AdaptiveMaxPool2d(1),
    nn.Flatten(),
    nn.Linear(32, 2),
)
opt = torch.optim.Adam(net.parameters(), 1e-3)
for ep in range(8):
    perm = torch.randperm(18000)
    for i in range(0, 18000, 64):
        b = perm[i : i + 64]
        loss = nn.functional.cross_entropy(net(Xtr[b]), ytr[b])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = (net(Xte).argmax(1) == yte).float().mean()
    print(ep, round(loss.item(), 3), round(acc.item(), 3), round(time.time() - t))
