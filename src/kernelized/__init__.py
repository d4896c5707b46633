"""kernelized: linear transformers whose attention kernel is a feature map, fixed or learned.

Layers, bottom to top: kernels (feature maps) -> ops (attention on tensors) -> layers (nn.Modules)
-> models -> data / train / eval -> experiments. See the README's Layout section.
"""

import os

# Ask torch's CPU allocator to back tensors of 2 MiB and more with transparent huge pages. It reads this once, at
# its first allocation, so it takes effect when kernelized is imported before torch allocates (as in the
# `kernelized` command). On the 2-core VM of docs/benchmarks.md, first touch of fresh memory cost 0.47 ms/MiB
# with 4 KiB pages and 0.14 ms/MiB with huge pages: the chunk form's forward+backward ran about 15% faster.
# Results do not change; set THP_MEM_ALLOC_ENABLE=0 to opt out.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

# Let torch's idle OpenMP threads sleep at once instead of spinning (libgomp's default spins 300,000 rounds after
# every parallel op): a spinning thread holds a core that the compiled kernels' worker threads need (kernelized.cpu
# runs them from Python threads). libgomp reads this once, when torch loads it, so again only where kernelized is
# imported first. Attention layers' forward + backward on the 2-core VM ran 10-30% faster (softmax's at the LRA
# shape 15%): docs/bench/threads/omp_wait.txt. Set OMP_WAIT_POLICY yourself to choose otherwise.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from kernelized import kernels, layers, ops  # noqa: E402
from kernelized._hf_hook import register_with_transformers  # noqa: E402

# `AutoConfig` / `AutoModelForCausalLM.from_pretrained` know model_type "kernelized" after `import kernelized`,
# without importing transformers here (it is optional and slow to import): registered when it is imported.
register_with_transformers()

__version__ = "0.1.0"
__all__ = ["kernels", "ops", "layers", "__version__"]
