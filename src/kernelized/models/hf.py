"""Hugging Face `transformers` wrappers (optional dependency): config, causal-LM model, Auto* registration.

    from kernelized.models.hf import KernelizedConfig, KernelizedForCausalLM
    hf_model = KernelizedForCausalLM.from_native(language_model)     # or KernelizedForCausalLM(KernelizedConfig(...))
    hf_model.save_pretrained("out/")                                  # config.json + model.safetensors
    AutoModelForCausalLM.from_pretrained("out/")                      # after `import kernelized` (no remote code)

The HF model holds a native :class:`kernelized.models.LanguageModel` as ``.model``, so its logits are the native
model's. ``generate`` (greedy, sampling, beam search, left-padded batches) carries every layer's own state in a
:class:`kernelized.models.hf_cache.KernelizedCache` (``outputs.cache``): one prefill, then one recurrent step per
token, as :func:`kernelized.models.generation.generate` (``use_cache=False`` recomputes the sequence each step).
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
from kernelized.models.hf_cache import KernelizedCache


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

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        """No DynamicCache: the model brings its own :class:`KernelizedCache` (made at the first forward)."""
        return False

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        cache: KernelizedCache | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """Without a cache (and ``use_cache`` falsy): the whole sequence. With one: the prompt is prefilled (kernel
        layers in their chunk form) into a :class:`KernelizedCache`, then each call feeds only the new tokens through
        the state (recurrent form), which ``outputs.cache`` returns. ``attention_mask`` 0 marks padding; left
        padding is skipped by every mixer and moves the row's positions back, so a padded row decodes as alone."""
        if cache is None and not use_cache:
            key_padding_mask = None if attention_mask is None else attention_mask == 0
            shift = None if attention_mask is None else left_padding(attention_mask)
            logits = self.model(input_ids, key_padding_mask=key_padding_mask, position_shift=shift)
        else:
            cache = cache if cache is not None else KernelizedCache()
            logits = self._step(input_ids, attention_mask, cache)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100
            )
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=cache)

    def _step(self, input_ids, attention_mask, cache: KernelizedCache) -> torch.Tensor:
        """The prompt in one call (the rows' left padding measured once, kept in the cache), or the new tokens
        through the state."""
        if cache.state is None:
            shift = None if attention_mask is None else left_padding(attention_mask)
            cache.left_padding = shift
            pad = None if attention_mask is None else attention_mask[:, -input_ids.shape[1] :] == 0
            pad = pad if pad is not None and bool(pad.any()) else None
            logits, cache.state = self.model(
                input_ids, key_padding_mask=pad, output_state=True, mode="chunk", position_shift=shift
            )
        else:
            logits, cache.state = self.model(
                input_ids, state=cache.state, output_state=True, mode="recurrent", position_shift=cache.left_padding
            )
        return logits

    def prepare_inputs_for_generation(self, input_ids, attention_mask=None, cache=None, use_cache=True, **kwargs):
        """With a cache only the tokens it has not seen go in; without one (``use_cache=False``) every step runs the
        whole sequence."""
        if not use_cache:
            return {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": False}
        if cache is not None and cache.state is not None:
            input_ids = input_ids[:, cache.get_seq_length() :]
        return {"input_ids": input_ids, "attention_mask": attention_mask, "cache": cache, "use_cache": True}


def left_padding(attention_mask: torch.Tensor) -> torch.Tensor:
    """``[B]``: the zeros before each row's first 1 in ``attention_mask [B, T]``."""
    return (attention_mask.long().cumsum(-1) == 0).sum(-1)


def register() -> None:
    """Make ``AutoConfig`` / ``AutoModelForCausalLM`` know ``model_type="kernelized"`` (done on import)."""
    AutoConfig.register(KernelizedConfig.model_type, KernelizedConfig, exist_ok=True)
    AutoModelForCausalLM.register(KernelizedConfig, KernelizedForCausalLM, exist_ok=True)


register()
