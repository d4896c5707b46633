"""Model configs and models: sequence backbone, language model, classifiers."""

from kernelized.models.backbone import Block, LanguageModel, ModelConfig, SequenceModel

__all__ = ["Block", "LanguageModel", "ModelConfig", "SequenceModel"]
from kernelized.models.generation import generate as generate  # noqa: E402
