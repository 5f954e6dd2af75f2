"""Inference: the one-shot and person-specific protocols, the family registry, the diffusion
sampler and the reenactment inputs (Reference, Motion)."""

from onehead.pipelines.families import FAMILIES, Family, default_model_dir, read_model_config, register_family
from onehead.pipelines.one_shot import AnimationResult, Animator, Reenactment
from onehead.pipelines.person_avatar import PersonAvatar

__all__ = ["FAMILIES", "Family", "read_model_config", "register_family", "AnimationResult", "Animator",
           "Reenactment", "default_model_dir", "PersonAvatar"]
