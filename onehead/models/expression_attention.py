"""Expression cross-attention (DiffusionAvatars, paper 000, 3.5) through attention processors.

Beside a UNet's existing cross-attention Z = Attention(Q, K, V), a new one reads N expression
tokens: Z' = Z + W_out Attention(Q, W_k f_exp, W_v f_exp). W_out starts at zero, so a UNet with
these processors computes exactly what it did before (the IP-Adapter way; no fork of the UNet).

    tokens = ExpressionTokens()
    layers = attach_expression_attention(unet, tokens)   # nn.ModuleDict of the new weights
    tokens.value = encoder(expression)                    # (B, N, D), before each UNet call
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ExpressionTokens:
    """The expression tokens (B, N, D) of the current UNet call; None switches the layers off."""

    def __init__(self):
        self.value: torch.Tensor | None = None


class ExpressionLayer(nn.Module):
    """The new keys, values and zero-initialised output projection of one attention layer."""

    def __init__(self, attn):
        super().__init__()
        inner, query_dim = attn.to_q.out_features, attn.to_q.in_features
        context_dim = attn.to_k.in_features
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        with torch.no_grad():  # start from the layer's own projections
            self.to_k.weight.copy_(attn.to_k.weight)
            self.to_v.weight.copy_(attn.to_v.weight)
        self.to_out = nn.Linear(inner, query_dim)
        nn.init.zeros_(self.to_out.weight)
        nn.init.zeros_(self.to_out.bias)

    def forward(self, attn, hidden_states: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        batch = hidden_states.shape[0]
        heads = attn.heads
        query = attn.to_q(hidden_states)
        key, value = self.to_k(tokens.to(query.dtype)), self.to_v(tokens.to(query.dtype))
        split = lambda x: x.view(batch, -1, heads, x.shape[-1] // heads).transpose(1, 2)  # noqa: E731
        out = F.scaled_dot_product_attention(split(query), split(key), split(value))
        return self.to_out(out.transpose(1, 2).reshape(batch, -1, query.shape[-1]))


class ExpressionAttention:
    """Processor: the layer's own attention (its previous processor) plus the expression branch."""

    def __init__(self, base, layer: ExpressionLayer, tokens: ExpressionTokens):
        self.base, self.layer, self.tokens = base, layer, tokens

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        out = self.base(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        tokens = self.tokens.value
        if tokens is None or hidden_states.ndim != 3:
            return out
        if tokens.shape[0] != hidden_states.shape[0]:
            tokens = tokens.repeat_interleave(hidden_states.shape[0] // tokens.shape[0], 0)
        return out + self.layer(attn, hidden_states, tokens)


def expression_layer_names(unet) -> list[str]:
    """The cross-attention layers of the down and up blocks (the paper: 15 in Stable Diffusion)."""
    return [name for name in unet.attn_processors
            if name.endswith("attn2.processor") and name.startswith(("down_blocks", "up_blocks"))]


def attach_expression_attention(unet, tokens: ExpressionTokens) -> nn.ModuleDict:
    """Install ExpressionAttention on those layers; returns their new weights, keyed by layer
    (dots as underscores). The processors are not modules of the UNet: its weights stay its own."""
    names = expression_layer_names(unet)
    modules = dict(unet.named_modules())
    layers, processors = nn.ModuleDict(), {}
    for name, processor in unet.attn_processors.items():
        if name in names:
            attn = modules[name[: -len(".processor")]]
            layer = ExpressionLayer(attn)
            layers[name.replace(".", "_")] = layer
            processor = ExpressionAttention(processor, layer, tokens)
        processors[name] = processor
    unet.set_attn_processor(processors)
    return layers
