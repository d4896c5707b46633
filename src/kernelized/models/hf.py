"""Hugging Face `transformers` wrappers (optional dependency): config, causal-LM model, Auto* registration.

    from kernelized.models.hf import KernelizedConfig, KernelizedForCausalLM
    hf_model = KernelizedForCausalLM.from_native(language_model)     # or KernelizedForCausalLM(KernelizedConfig(...))
    hf_model.save_pretrained("out/")                                  # config.json + model.safetensors
    AutoModelForCausalLM.from_pretrained("out/")                      # after `import kernelized` (no remote code)

The HF model holds a native :class:`kernelized.models.LanguageModel` as ``.model``, so its logits are the native
model's. Its ``forward`` computes the whole sequence (``past_key_values`` are not used); fast decoding with the
kernel states is :func:`kernelized.models.generation.generate` on ``hf_model.model``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    GenerationMixin,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.modeling_outputs import CausalLMOutputWithPast

import kernelized.layers.sliding_window  # noqa: F401  (registers the "sliding_window" mixer)
from kernelized.models.backbone import LanguageModel, ModelConfig


class KernelizedConfig(PretrainedConfig):
    """A :class:`ModelConfig` as a `PretrainedConfig`: ``model_config`` is ``ModelConfig.to_dict()``."""

    model_type = "kernelized"

    def __init__(self, model_config: dict | None = None, **kwargs):
        self.model_config = dict(model_config or {})
        if self.model_config:
            ModelConfig.from_dict(self.model_config)  # validate early, with the native error messages
        kwargs.setdefault("tie_word_embeddings", self.model_config.get("tie_embeddings", True))
        super().__init__(**kwargs)
        # the names generic HF utilities look for
        self.vocab_size = self.model_config.get("vocab_size")
        self.hidden_size = self.model_config.get("d_model")
        self.num_hidden_layers = len(self.model_config.get("blocks", []))
        self.max_position_embeddings = self.model_config.get("max_len")

    @classmethod
    def from_model_config(cls, cfg: ModelConfig, **kwargs) -> KernelizedConfig:
        return cls(model_config=cfg.to_dict(), **kwargs)


class KernelizedForCausalLM(PreTrainedModel, GenerationMixin):
    """``input_ids [B, T]`` -> ``CausalLMOutputWithPast(logits [B, T, V], loss)``; loss when ``labels`` are given
    (shifted inside, as HF causal LMs do; -100 ignored). ``attention_mask`` [B, T] (1 = token, 0 = padding)."""

    config_class = KernelizedConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _tied_weights_keys = {"model.head.weight": "model.backbone.embed.weight"}
    _keys_to_ignore_on_load_missing = [r"_extra_state$"]

    def __init__(self, config: KernelizedConfig):
        super().__init__(config)
        if not config.model_config:
            raise ValueError("KernelizedConfig.model_config is empty; build it from a ModelConfig")
        self.model = LanguageModel(ModelConfig.from_dict(config.model_config))
        self.post_init()

    def _init_weights(self, module):
        """The native model initialises itself (GPT-2 style, feature maps their own way): nothing to redo."""

    @classmethod
    def from_native(cls, model: LanguageModel) -> KernelizedForCausalLM:
        """Wrap a trained native model (its weights are copied)."""
        hf = cls(KernelizedConfig.from_model_config(model.cfg))
        hf.model.load_state_dict(model.state_dict())
        return hf

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, then rebuild the non-persistent buffers (sinusoidal tables, ...):
        transformers builds the model on the meta device and only fills what the checkpoint holds."""
        model = super().from_pretrained(*args, **kwargs)
        saved = set(model.state_dict())
        missing = [name for name, _ in model.named_buffers() if name not in saved]
        if missing:
            fresh = dict(LanguageModel(ModelConfig.from_dict(model.config.model_config)).named_buffers())
            for name in missing:
                owner_name, _, attr = name.rpartition(".")
                owner = model.get_submodule(owner_name)
                value = fresh[name.removeprefix("model.")].to(getattr(owner, attr).dtype)
                owner.register_buffer(attr, value.to(model.device), persistent=False)
        return model

    def state_dict(self, *args, **kwargs):
        """Tensors only: safetensors cannot hold the random-feature maps' redraw counters (``_extra_state``);
        native checkpoints keep them for exact resume."""
        sd = super().state_dict(*args, **kwargs)
        for key in [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]:
            del sd[key]
        return sd

    def get_input_embeddings(self):
        return self.model.backbone.embed

    def set_input_embeddings(self, value):
        self.model.backbone.embed = value

    def get_output_embeddings(self):
        return self.model.head

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        key_padding_mask = None if attention_mask is None else attention_mask == 0
        logits = self.model(input_ids, key_padding_mask=key_padding_mask)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100
            )
        return CausalLMOutputWithPast(loss=loss, logits=logits)

    def prepare_inputs_for_generation(self, input_ids, attention_mask=None, **kwargs):
        """No cache: every generation step runs the whole sequence (use kernelized's generate() for speed)."""
        return {"input_ids": input_ids, "attention_mask": attention_mask}


def register() -> None:
    """Make ``AutoConfig`` / ``AutoModelForCausalLM`` know ``model_type="kernelized"`` (done on import)."""
    AutoConfig.register(KernelizedConfig.model_type, KernelizedConfig, exist_ok=True)
    AutoModelForCausalLM.register(KernelizedConfig, KernelizedForCausalLM, exist_ok=True)


register()
