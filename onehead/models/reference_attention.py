"""ReferenceNet shared attention through diffusers attention processors (no UNet fork).

The reference UNet's self-attention layers *write* their input hidden states to a bank; the
denoising UNet's matching self-attention layers *read* them and attend over
[own tokens, reference tokens] as keys and values. The reference UNet runs once per clip on the
clean reference latents; its bank then serves every denoising step and every frame.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class ReferenceBank:
    """Hidden states of the reference UNet's self-attention layers, by layer name."""

    def __init__(self):
        self.states: dict[str, torch.Tensor] = {}
        self.writes = 0  # reference passes since the last clear (tests check it is one per clip)

    def clear(self) -> None:
        self.states.clear()
        self.writes = 0

    @property
    def empty(self) -> bool:
        return not self.states

    def clips(self) -> int:
        """The reference batch: the denoising UNet's batch is (clips x frames)."""
        if self.empty:
            raise RuntimeError("the reference bank is empty: run the reference UNet before denoising")
        return next(iter(self.states.values())).shape[0]


class SharedSelfAttention:
    """Self-attention processor that writes to or reads from a ReferenceBank (SDPA underneath)."""

    def __init__(self, bank: ReferenceBank, name: str, mode: str):
        if mode not in ("write", "read"):
            raise ValueError(mode)
        self.bank, self.name, self.mode = bank, name, mode

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        context = hidden_states
        if self.mode == "write":
            self.bank.states[self.name] = hidden_states
        elif self.name in self.bank.states:
            reference = self.bank.states[self.name]
            reference = reference.repeat_interleave(hidden_states.shape[0] // reference.shape[0], dim=0)
            context = torch.cat([hidden_states, reference.to(hidden_states.dtype)], dim=1)

        batch = hidden_states.shape[0]
        query = attn.to_q(hidden_states)
        key, value = attn.to_k(context), attn.to_v(context)
        head_dim = key.shape[-1] // attn.heads
        split = lambda x: x.view(batch, -1, attn.heads, head_dim).transpose(1, 2)  # noqa: E731
        query, key, value = split(query), split(key), split(value)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        out = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def attach_reference_attention(reference_unet, denoising_unet, bank: ReferenceBank) -> int:
    """Install write processors in the reference UNet and read processors in the denoising UNet
    on every self-attention layer ("attn1"); returns how many layer pairs share attention."""
    def install(unet, mode):
        processors = {}
        for name, processor in unet.attn_processors.items():
            if name.endswith("attn1.processor"):
                processors[name] = SharedSelfAttention(bank, name, mode)
            else:
                processors[name] = processor
        shared = sum(1 for n in processors if n.endswith("attn1.processor"))
        unet.set_attn_processor(processors)  # (diffusers empties the dict it is given)
        return shared

    written, read = install(reference_unet, "write"), install(denoising_unet, "read")
    if written != read:
        raise ValueError(f"reference UNet has {written} self-attention layers, denoising UNet {read}")
    return read
