"""nn.Modules: attention mixers (kernel, softmax), BaseConv, MLP, and ``build_mixer`` from a spec."""

from kernelized.layers.attention import KernelAttention, SoftmaxAttention
from kernelized.layers.conv import BaseConv
from kernelized.layers.mixers import available_mixers, build_mixer, register_mixer
from kernelized.layers.mlp import MLP

__all__ = [
    "KernelAttention",
    "SoftmaxAttention",
    "BaseConv",
    "MLP",
    "available_mixers",
    "build_mixer",
    "register_mixer",
]
