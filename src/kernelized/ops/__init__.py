"""Attention on tensors, ``[B, T, H, D]`` layout, pure functions without parameters.

- :func:`linear_attention` on features, ``mode="parallel" | "chunk" | "recurrent"``, causal or not;
- :func:`polynomial_attention`: ``(q.k)^p`` (and Based's ``1 + s + s^2/2``) without materialising features;
- :func:`softmax_attention` on torch's scaled_dot_product_attention.
"""

from kernelized.ops import cost
from kernelized.ops.linear import linear_attention
from kernelized.ops.polynomial import polynomial_attention
from kernelized.ops.softmax import softmax_attention

__all__ = ["cost", "linear_attention", "polynomial_attention", "softmax_attention"]
