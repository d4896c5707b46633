"""Training steps/s of the GLUE cpu preset's masked-LM model per kernel and form (B 64, T 64, vocab 4096, 1 thread),
what sized configs/glue/cpu.yaml (parallel form for rebased/taylor, 64 frequencies for gmm-rks).

    .venv/bin/python docs/results/glue_calibration/step_rates.py softmax,rebased,taylor,gmm-rks chunk,parallel
"""
import time, torch, copy, sys
from kernelized.experiments import glue
from kernelized.experiments.glue_pretrain import model_config, mlm_loss
from kernelized.experiments.framework.presets import load_preset
from kernelized.models.backbone import LanguageModel
torch.set_num_threads(1)
cfg = load_preset("glue","cpu",[],defaults=glue.DEFAULTS)
B,T,V=64,64,4096
x=torch.randint(5,V,(B,T)); pad=torch.zeros(B,T,dtype=torch.bool)
lab=torch.full((B,T),-100); m=torch.rand(B,T)<0.15; lab[m]=x[m]
for k in sys.argv[1].split(","):
  for mode in sys.argv[2].split(","):
    c=glue.resolve({**copy.deepcopy(cfg),"kernel":k}); c["model"]["mode"]=mode
    torch.manual_seed(0); model=LanguageModel(model_config(c,V)); opt=torch.optim.AdamW(model.parameters())
    ts=[]
    for i in range(6):
        t=time.perf_counter(); loss,_=mlm_loss(model,(x,pad,lab)); loss.backward(); opt.step(); opt.zero_grad(); ts.append(time.perf_counter()-t)
    ts=sorted(ts[1:]); print(k,mode,f"{1/ts[2]:.2f} steps/s",flush=True)
