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

from kernelized import kernels, layers, ops  # noqa: E402
from kernelized._hf_hook import register_with_transformers  # noqa: E402

# `AutoConfig` / `AutoModelForCausalLM.from_pretrained` know model_type "kernelized" after `import kernelized`,
# without importing transformers here (it is optional and slow to import): registered when it is imported.
register_with_transformers()

__version__ = "0.1.0"
__all__ = ["kernels", "ops", "layers", "__version__"]
