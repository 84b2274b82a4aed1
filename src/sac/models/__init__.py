"""Pure ``nn.Module``s and tensor/numpy functions of SAC (no file I/O). Build models with
:func:`sac.backbones.build_sac`; save/load them with :mod:`sac.modelfile`."""

from sac.models.config import LoraConfig, PromptConfig, SACConfig, UNetConfig

__all__ = ["LoraConfig", "PromptConfig", "SACConfig", "UNetConfig"]
