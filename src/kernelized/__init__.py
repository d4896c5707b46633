"""kernelized: linear transformers whose attention kernel is a feature map, fixed or learned.

Layers, bottom to top: kernels (feature maps) -> ops (attention on tensors) -> layers (nn.Modules)
-> models -> data / train / eval -> experiments. See DESIGN in the repository docs.
"""

from kernelized import kernels, layers, ops

__version__ = "0.1.0"
__all__ = ["kernels", "ops", "layers", "__version__"]
