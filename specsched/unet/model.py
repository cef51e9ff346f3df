r"""A small DDPM U-Net (Ho, Jain & Abbeel 2020, appendix B), predicting the noise epsilon.

Notation: the input is a VP state ``x_t = sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps`` in NCHW
layout, float32; ``t`` is the (0-indexed, possibly fractional) training step, t = 0 least
noisy, embedded with the Transformer's sinusoids (Vaswani et al. 2017, section 3.5) and an
MLP. The network returns ``eps_hat`` of the shape of ``x_t``.

Architecture (as the DDPM reference, scaled down): a 3 x 3 input convolution; per resolution
level ``num_res_blocks`` residual blocks (GroupNorm, SiLU, 3 x 3 conv, + time embedding,
GroupNorm, SiLU, dropout, 3 x 3 conv) with single-head self-attention at the resolutions in
``attention_resolutions``, then a stride-2 convolution; a middle block (residual, attention,
residual); the mirror image upwards with skip connections (``num_res_blocks + 1`` blocks per
level, nearest-neighbour upsampling + 3 x 3 conv); GroupNorm, SiLU and a zero-initialised
3 x 3 output convolution. Importing this module imports torch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["UNet", "count_parameters", "timestep_embedding"]


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding (n, dim) of steps ``t`` (n,): ``[cos(t w_k), sin(t w_k)]``,
    ``w_k = max_period^(-k / (dim/2))`` (Vaswani et al. 2017; DDPM's ``get_timestep_embedding``).
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32,
                                                           device=t.device) / half)
    args = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(groups, channels), channels)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """Residual block with an additive time embedding (DDPM's ``resnet_block``)."""

    def __init__(self, in_ch: int, out_ch: int, temb_dim: int, dropout: float, groups: int):
        super().__init__()
        self.norm1 = _norm(in_ch, groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.temb = nn.Linear(temb_dim, out_ch)
        self.norm2 = _norm(out_ch, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the pixels of a feature map, residual."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = _norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x):
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, c, h * w).transpose(2, 3).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)  # (n, h*w, c)
        return x + self.proj(out.transpose(1, 2).reshape(n, c, h, w))


class UNet(nn.Module):
    """DDPM noise-prediction U-Net, ``model(x_t, t) -> eps_hat``.

    Parameters
    ----------
    image_size : int
        Height = width of the input in pixels; divisible by ``2^(len(channel_mults) - 1)``.
    image_channels : int
        Channels of the data (1 for Fashion-MNIST).
    base_channels : int
        Feature channels of the first level; level i has ``base_channels * channel_mults[i]``.
        The time embedding has ``4 * base_channels`` features.
    channel_mults : tuple of int
        One multiplier per resolution level, the first at full resolution; each further level
        halves the resolution.
    num_res_blocks : int
        Residual blocks per level on the way down (``+ 1`` on the way up).
    attention_resolutions : tuple of int
        Resolutions (in pixels) whose blocks are followed by self-attention; the middle block
        always has one.
    dropout : float
        Dropout probability inside the residual blocks.
    groups : int
        GroupNorm groups (reduced to ``gcd(groups, channels)`` for narrow layers).

    Notes
    -----
    ``self.config`` holds these arguments (a plain dict) so a checkpoint can rebuild the
    network. The output convolution and each block's last layer start at zero, so the
    initial network predicts eps_hat = 0.
    """

    def __init__(self, image_size: int = 16, image_channels: int = 1, base_channels: int = 32,
                 channel_mults: tuple[int, ...] = (1, 2, 2), num_res_blocks: int = 2,
                 attention_resolutions: tuple[int, ...] = (4,), dropout: float = 0.0,
                 groups: int = 8):
        super().__init__()
        levels = len(channel_mults)
        if image_size % (2 ** (levels - 1)):
            raise ValueError(f"image_size {image_size} is not divisible by 2^{levels - 1}")
        self.config = {
            "image_size": int(image_size), "image_channels": int(image_channels),
            "base_channels": int(base_channels),
            "channel_mults": [int(m) for m in channel_mults],
            "num_res_blocks": int(num_res_blocks),
            "attention_resolutions": [int(r) for r in attention_resolutions],
            "dropout": float(dropout), "groups": int(groups),
        }
        ch = base_channels
        temb_dim = 4 * base_channels
        self.temb = nn.Sequential(nn.Linear(base_channels, temb_dim), nn.SiLU(),
                                  nn.Linear(temb_dim, temb_dim))
        self.conv_in = nn.Conv2d(image_channels, ch, 3, padding=1)
        self.down = nn.ModuleList()
        skips = [ch]
        res = image_size
        for i, mult in enumerate(channel_mults):
            for _ in range(num_res_blocks):
                out = base_channels * mult
                self.down.append(self._block(ch, out, temb_dim, dropout, groups,
                                             res in attention_resolutions))
                ch = out
                skips.append(ch)
            if i < levels - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                res //= 2
                skips.append(ch)
        self.mid = nn.ModuleList([ResBlock(ch, ch, temb_dim, dropout, groups),
                                  AttnBlock(ch, groups),
                                  ResBlock(ch, ch, temb_dim, dropout, groups)])
        self.up = nn.ModuleList()
        for i, mult in reversed(list(enumerate(channel_mults))):
            for _ in range(num_res_blocks + 1):
                out = base_channels * mult
                self.up.append(self._block(ch + skips.pop(), out, temb_dim, dropout, groups,
                                           res in attention_resolutions))
                ch = out
            if i > 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                             nn.Conv2d(ch, ch, 3, padding=1)))
                res *= 2
        self.norm_out = _norm(ch, groups)
        self.conv_out = _zero(nn.Conv2d(ch, image_channels, 3, padding=1))

    @staticmethod
    def _block(in_ch, out_ch, temb_dim, dropout, groups, attention):
        blocks = [ResBlock(in_ch, out_ch, temb_dim, dropout, groups)]
        if attention:
            blocks.append(AttnBlock(out_ch, groups))
        return nn.ModuleList(blocks)

    @staticmethod
    def _run(block, h, temb):
        if isinstance(block, nn.ModuleList):  # residual block (+ attention)
            h = block[0](h, temb)
            return block[1](h) if len(block) > 1 else h
        return block(h)  # down- or upsampling

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``eps_hat`` (n, C, H, W) for states ``x`` (n, C, H, W) at training steps ``t`` (n,)."""
        temb = self.temb(timestep_embedding(t, self.config["base_channels"]))
        h = self.conv_in(x)
        hs = [h]
        for block in self.down:
            h = self._run(block, h, temb)
            hs.append(h)
        h = self.mid[2](self.mid[1](self.mid[0](h, temb)), temb)
        for block in self.up:
            if isinstance(block, nn.ModuleList):
                h = torch.cat([h, hs.pop()], dim=1)
            h = self._run(block, h, temb)
        return self.conv_out(F.silu(self.norm_out(h)))
