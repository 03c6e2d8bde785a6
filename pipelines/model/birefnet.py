"""BiRefNet (bilateral reference network) for dichotomous image segmentation, inference only.

Our own implementation of the network released at github.com/ZhengPeng7/BiRefNet (MIT), written
from the clean-room description in ``shared/reference/architecture.md``. It loads the released
checkpoints strictly (same module names, every key accounted for) and reproduces the official
float64 output to ~1e-15 on the deterministic reference cases (``scripts/check_equivalence.py``).

Layout, as in timm: small tensor helpers, blocks from smallest to largest (Swin pieces, the
modulated deformable conv, the ASPP and decoder blocks), the model, the checkpoint filter, the
builder and the configs of the backbones.

Shapes use ``B`` batch, ``H, W`` input size (multiples of 32), ``C`` channels. Every resize inside
the network is bilinear with ``align_corners=True``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import deform_conv2d

__all__ = [
    "BiRefNet",
    "BiRefNetConfig",
    "CheckpointError",
    "DeformSampling",
    "PatchOrder",
    "SwinConfig",
    "TRAINING_ONLY_PREFIXES",
    "checkpoint_filter_fn",
    "create_model",
    "SWIN_L",
    "SWIN_T",
]

# Keys of the side-output heads that only training uses; released files carry them.
TRAINING_ONLY_PREFIXES: tuple[str, ...] = ("decoder.conv_ms_spvn_", "decoder.gdt_convs_pred_")
_WRAPPER_PREFIXES: tuple[str, ...] = ("module.", "_orig_mod.")


# --------------------------------------------------------------------------------------------
# Small tensor helpers
# --------------------------------------------------------------------------------------------


def resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize with ``align_corners=True``, the only resize mode used in the network."""
    target = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == target:
        return x
    return F.interpolate(x, size=target, mode="bilinear", align_corners=True)


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """``[B, H, W, C]`` (H, W multiples of ``window``) → ``[B·nW, window², C]``, windows row-major."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def window_reverse(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``[B·nW, window², C]`` → ``[B, H, W, C]``."""
    c = windows.shape[-1]
    x = windows.view(-1, h // window, w // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)


def relative_position_index(window: int) -> torch.Tensor:
    """``[window², window²]`` int64: index into the bias table for query a and key b of a window.

    ``index[a, b] = (ya − yb + window − 1)·(2·window − 1) + (xa − xb + window − 1)``.
    """
    coords = torch.stack(
        torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    ).flatten(1)  # [2, N]
    rel = coords[:, :, None] - coords[:, None, :] + (window - 1)  # [2, N, N]
    return rel[0] * (2 * window - 1) + rel[1]


def shifted_window_mask(
    height: int, width: int, window: int, shift: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """Additive attention mask ``[nW, N, N]`` (0 or −inf) for the shifted windows of an H×W map.

    Tokens of a window that came from different regions of the cyclically rolled map must not
    attend to each other.
    """
    labels = torch.zeros(1, height, width, 1, device=device)
    bounds = ((0, height - window), (height - window, height - shift), (height - shift, height))
    col_bounds = ((0, width - window), (width - window, width - shift), (width - shift, width))
    for r, (r0, r1) in enumerate(bounds):
        for c, (c0, c1) in enumerate(col_bounds):
            labels[:, r0:r1, c0:c1, :] = 3 * r + c
    windows = window_partition(labels, window).squeeze(-1)  # [nW, N]
    different = windows[:, :, None] != windows[:, None, :]
    mask = torch.zeros(different.shape, device=device, dtype=dtype)
    return mask.masked_fill(different, float("-inf"))


def stack_patches(x: torch.Tensor, size: tuple[int, int], order: PatchOrder) -> torch.Tensor:
    """Cut ``x [B, 3, H, W]`` into a grid of ``size`` patches stacked on channels.

    Returns ``[B, 3·gh·gw, h, w]`` with ``gh = H // h``, ``gw = W // w``. In the current order the
    channel index is ``c·(gh·gw) + gy·gw + gx``; in the legacy (pre-2024-11) order it is
    ``(gx·gh + gy)·3 + c``.
    """
    b, c, height, width = x.shape
    h, w = size
    gh, gw = height // h, width // w
    grid = x.view(b, c, gh, h, gw, w)
    if order is PatchOrder.CURRENT:
        grid = grid.permute(0, 1, 2, 4, 3, 5)  # B, c, gy, gx, h, w
    else:
        grid = grid.permute(0, 4, 2, 1, 3, 5)  # B, gx, gy, c, h, w
    return grid.reshape(b, c * gh * gw, h, w)


def deform_conv2d_by_sampling(
    x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor, padding: int, mask: torch.Tensor
) -> torch.Tensor:
    """Modulated deformable conv (stride 1, dilation 1, one offset group) built from ``grid_sample``.

    Same contract and result as ``torchvision.ops.deform_conv2d(x, offset, weight, padding=padding,
    mask=mask)`` for an odd k×k ``weight [O, C, k, k]``: ``x [B, C, H, W]``, ``offset [B, 2k², H, W]``
    (channels ``2n``/``2n+1`` = Δy/Δx of tap n), ``mask [B, k², H, W]`` → ``[B, O, H, W]``. Taps
    sample bilinearly with zeros outside the map. All k² taps are gathered by one ``grid_sample``
    and contracted with the weight by one matmul. On CPU it is about twice as fast as torchvision's
    kernel forward and seven times backward (``scripts/bench_deform_conv.py``), so training and CPU
    inference use it; CUDA keeps torchvision's kernel until a device measurement says otherwise.
    """
    b, c, h, w = x.shape
    out_channels, _, k, _ = weight.shape
    taps = k * k
    ky, kx = torch.meshgrid(torch.arange(k, device=x.device, dtype=x.dtype),
                            torch.arange(k, device=x.device, dtype=x.dtype), indexing="ij")
    ys = torch.arange(h, device=x.device, dtype=x.dtype).view(1, 1, h, 1)
    xs = torch.arange(w, device=x.device, dtype=x.dtype).view(1, 1, 1, w)
    offset = offset.view(b, taps, 2, h, w)
    sample_y = ys + (ky.reshape(1, taps, 1, 1) - padding) + offset[:, :, 0]  # [B, k², H, W]
    sample_x = xs + (kx.reshape(1, taps, 1, 1) - padding) + offset[:, :, 1]
    # Pixel centres for align_corners=False: index i ↦ (2i + 1) / size − 1.
    grid = torch.stack(((2 * sample_x + 1) / w - 1, (2 * sample_y + 1) / h - 1), dim=-1)
    sampled = F.grid_sample(x, grid.view(b, taps * h, w, 2), mode="bilinear", padding_mode="zeros",
                            align_corners=False)  # [B, C, k²·H, W]
    columns = sampled.view(b, c, taps, h * w) * mask.view(b, 1, taps, h * w)
    out = weight.reshape(out_channels, c * taps) @ columns.view(b, c * taps, h * w)
    return out.view(b, out_channels, h, w)


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


class PatchOrder(str, enum.Enum):
    """Channel order of the stacked image patches fed to the decoder (architecture.md §7.2)."""

    CURRENT = "current"  # official code since 2024-11-05
    LEGACY = "legacy"  # official code before, and the checkpoints trained with it


class DeformSampling(str, enum.Enum):
    """How the modulated deformable convs sample their taps (same result either way)."""

    TORCHVISION = "torchvision"  # torchvision.ops.deform_conv2d: the CUDA path
    GRID_SAMPLE = "grid_sample"  # deform_conv2d_by_sampling: faster on CPU, backward most of all


@dataclass(frozen=True)
class SwinConfig:
    """Hyper-parameters of the Swin-V1 backbone (detection flavour: any input size)."""

    embed_dim: int
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    window_size: int
    mlp_ratio: float = 4.0
    patch_size: int = 4

    @property
    def stage_widths(self) -> tuple[int, ...]:
        return tuple(self.embed_dim * 2**i for i in range(len(self.depths)))


SWIN_L = SwinConfig(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48), window_size=12)
SWIN_T = SwinConfig(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7)


@dataclass(frozen=True)
class BiRefNetConfig:
    """Everything that shapes a BiRefNet. The released weights differ only in ``backbone``.

    Attributes:
        backbone: the Swin hyper-parameters (``SWIN_L`` for general & co., ``SWIN_T`` for lite).
        decoder_width: inner width of every decoder block and patch branch (64 in releases).
        aspp_width: width of each ASPP branch (256 in releases).
        gradient_width: width of the gradient-attention branch (16 in releases).
        patch_order: channel order of the stacked image patches.
        deform_sampling: the deformable-conv implementation (no effect on the weights or output).
    """

    backbone: SwinConfig = SWIN_L
    decoder_width: int = 64
    aspp_width: int = 256
    gradient_width: int = 16
    patch_order: PatchOrder = PatchOrder.CURRENT
    deform_sampling: DeformSampling = DeformSampling.TORCHVISION

    @property
    def channels(self) -> tuple[int, int, int, int]:
        """Decoder channels ``[c4, c3, c2, c1]`` (deepest first), doubled by the two-scale concat."""
        widths = [2 * w for w in self.backbone.stage_widths]
        return widths[3], widths[2], widths[1], widths[0]


# --------------------------------------------------------------------------------------------
# Swin blocks
# --------------------------------------------------------------------------------------------


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows, with a learned relative position bias."""

    relative_position_index: torch.Tensor

    def __init__(self, dim: int, window_size: int, num_heads: int) -> None:
        super().__init__()
        self.window_size = window_size
        self.num_heads = num_heads
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) ** 2, num_heads)
        )
        self.register_buffer("relative_position_index", relative_position_index(window_size))
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``x [B·nW, N, C]``, ``mask [nW, N, N]`` additive or None → ``[B·nW, N, C]``."""
        bw, n, c = x.shape
        qkv = self.qkv(x).view(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # [B·nW, heads, N, d]
        index = self.relative_position_index.view(-1)
        # Contiguous: every fused SDPA kernel (cuDNN, memory-efficient, flash on the CPU) needs the
        # mask's last stride to be 1; the permuted view's is ``heads``, which sends the call to the
        # math kernel (in float32 for half inputs, scores materialised).
        bias = self.relative_position_bias_table[index].view(n, n, -1).permute(2, 0, 1).contiguous()  # [heads, N, N]
        bias = bias.to(q.dtype).unsqueeze(0)
        if mask is not None:
            n_windows = mask.shape[0]
            bias = (bias.view(1, 1, self.num_heads, n, n) + mask.view(1, n_windows, 1, n, n)).expand(
                bw // n_windows, -1, -1, -1, -1
            )
            bias = bias.reshape(bw, self.num_heads, n, n)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))


class SwinBlock(nn.Module):
    """Pre-norm Swin block: (shifted) window attention, then an MLP, each with a residual."""

    def __init__(self, dim: int, num_heads: int, window_size: int, shift: int, mlp_ratio: float) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift = shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """``x [B, H·W, C]`` tokens of an H×W map → same shape."""
        b, _, c = x.shape
        ws = self.window_size
        u = self.norm1(x).view(b, height, width, c)
        # Pad after the norm: the padded tokens are exact zeros and take part as keys (no mask).
        pad_b, pad_r = (ws - height % ws) % ws, (ws - width % ws) % ws
        u = F.pad(u, (0, 0, 0, pad_r, 0, pad_b))
        hp, wp = height + pad_b, width + pad_r
        mask = None
        if self.shift > 0:
            u = torch.roll(u, shifts=(-self.shift, -self.shift), dims=(1, 2))
            mask = shifted_window_mask(hp, wp, ws, self.shift, u.device, u.dtype)
        attended = self.attn(window_partition(u, ws), mask)
        u = window_reverse(attended, ws, hp, wp)
        if self.shift > 0:
            u = torch.roll(u, shifts=(self.shift, self.shift), dims=(1, 2))
        u = u[:, :height, :width, :].reshape(b, height * width, c)
        x = x + u
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """2×2 neighbourhood → channels (4C), LayerNorm, then a linear map to 2C. Halves H and W."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """``[B, H·W, C]`` → ``[B, ⌈H/2⌉·⌈W/2⌉, 2C]``."""
        b, _, c = x.shape
        grid = x.view(b, height, width, c)
        grid = F.pad(grid, (0, 0, 0, width % 2, 0, height % 2))
        merged = torch.cat(
            [grid[:, 0::2, 0::2], grid[:, 1::2, 0::2], grid[:, 0::2, 1::2], grid[:, 1::2, 1::2]], dim=-1
        )
        return self.reduction(self.norm(merged.view(b, -1, 4 * c)))


class SwinStage(nn.Module):
    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, mlp_ratio: float, merge: bool):
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, window_size, 0 if i % 2 == 0 else window_size // 2, mlp_ratio)
            for i in range(depth)
        )
        self.downsample = PatchMerging(dim) if merge else None

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, height, width)
        return x


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(3, embed_dim, patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """``[B, 3, H, W]`` → tokens ``[B, h·w, C]`` and the token grid size ``(h, w)``."""
        p = self.patch_size
        x = F.pad(x, (0, (p - x.shape[-1] % p) % p, 0, (p - x.shape[-2] % p) % p))
        x = self.proj(x)
        height, width = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), int(height), int(width)


class SwinTransformer(nn.Module):
    """Swin-V1 backbone returning the four stage outputs ``[B, C·2^s, H/2^(s+2), W/2^(s+2)]``."""

    def __init__(self, config: SwinConfig) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(config.patch_size, config.embed_dim)
        widths = config.stage_widths
        last = len(config.depths) - 1
        self.layers = nn.ModuleList(
            SwinStage(widths[i], config.depths[i], config.num_heads[i], config.window_size, config.mlp_ratio,
                      merge=i < last)
            for i in range(len(config.depths))
        )
        for i, width in enumerate(widths):
            self.add_module(f"norm{i}", nn.LayerNorm(width))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        tokens, height, width = self.patch_embed(x)
        outputs = []
        for i, module in enumerate(self.layers):
            stage = cast(SwinStage, module)
            tokens = stage(tokens, height, width)
            norm = getattr(self, f"norm{i}")
            out = norm(tokens).view(tokens.shape[0], height, width, -1).permute(0, 3, 1, 2)
            outputs.append(out.contiguous())
            if stage.downsample is not None:
                tokens = stage.downsample(tokens, height, width)
                height, width = (height + 1) // 2, (width + 1) // 2
        return outputs


# --------------------------------------------------------------------------------------------
# Decoder blocks
# --------------------------------------------------------------------------------------------


class ModulatedDeformConv(nn.Module):
    """DCNv2: a k×k conv whose taps are displaced by learned offsets and scaled by 2·sigmoid(m).

    Offsets and modulators come from ordinary k×k convs of the same input; the sampling is
    ``torchvision.ops.deform_conv2d`` (offset channels ``2n``/``2n+1`` = Δy/Δx of tap n) or, on
    CPU, :func:`deform_conv2d_by_sampling`.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 sampling: DeformSampling = DeformSampling.TORCHVISION) -> None:
        super().__init__()
        self.padding = kernel_size // 2
        self.sampling = sampling
        taps = kernel_size * kernel_size
        self.offset_conv = nn.Conv2d(in_channels, 2 * taps, kernel_size, padding=self.padding)
        self.modulator_conv = nn.Conv2d(in_channels, taps, kernel_size, padding=self.padding)
        self.regular_conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=self.padding, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset = self.offset_conv(x)
        modulator = 2.0 * torch.sigmoid(self.modulator_conv(x))
        return self.sample(x, offset, modulator, self.regular_conv.weight)

    def sample(self, x: torch.Tensor, offset: torch.Tensor, modulator: torch.Tensor,
               weight: torch.Tensor) -> torch.Tensor:
        """The deformable conv proper, by the configured implementation: ``[B, C, H, W]`` → ``[B, O, H, W]``."""
        if self.sampling is DeformSampling.GRID_SAMPLE:
            return deform_conv2d_by_sampling(x, offset, weight, self.padding, modulator)
        return deform_conv2d(x, offset, weight, padding=self.padding, mask=modulator)


class DeformBranch(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, sampling: DeformSampling) -> None:
        super().__init__()
        self.atrous_conv = ModulatedDeformConv(in_channels, out_channels, kernel_size, sampling)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.atrous_conv(x)))


class ASPPDeformable(nn.Module):
    """Atrous-spatial-pyramid pooling built from deformable branches (kernels 1, 1, 3, 7) and a
    global-average-pool branch, fused by a 1×1 conv. ``[B, C, h, w]`` → ``[B, C, h, w]``."""

    def __init__(self, channels: int, branch_width: int, sampling: DeformSampling) -> None:
        super().__init__()
        self.aspp1 = DeformBranch(channels, branch_width, 1, sampling)
        self.aspp_deforms = nn.ModuleList(DeformBranch(channels, branch_width, k, sampling) for k in (1, 3, 7))
        self.global_avg_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, branch_width, 1, bias=False),
            nn.BatchNorm2d(branch_width),
            nn.ReLU(inplace=True),
        )
        self.conv1 = nn.Conv2d(5 * branch_width, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.aspp1(x), *(branch(x) for branch in self.aspp_deforms)]
        pooled = self.global_avg_pool(x).expand(-1, -1, x.shape[2], x.shape[3])
        return F.relu(self.bn1(self.conv1(torch.cat([*branches, pooled], dim=1))))


class BasicDecBlock(nn.Module):
    """conv3×3 → BN → ReLU → ASPPDeformable → conv3×3 → BN (no final activation)."""

    def __init__(self, in_channels: int, out_channels: int, inner: int, aspp_width: int,
                 sampling: DeformSampling) -> None:
        super().__init__()
        # Registration order mirrors the released state dicts (it differs from execution order).
        self.conv_in = nn.Conv2d(in_channels, inner, 3, padding=1)
        self.dec_att = ASPPDeformable(inner, aspp_width, sampling)
        self.conv_out = nn.Conv2d(inner, out_channels, 3, padding=1)
        self.bn_in = nn.BatchNorm2d(inner)
        self.bn_out = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn_in(self.conv_in(x)))
        return self.bn_out(self.conv_out(self.dec_att(x)))


class PatchBranch(nn.Module):
    """Two plain 3×3 convs over stacked image patches (the "input reference" of each level)."""

    def __init__(self, in_channels: int, out_channels: int, inner: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, inner, 3, padding=1)
        self.conv_out = nn.Conv2d(inner, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv1(x))


class LateralBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _gradient_convs(channels: int, width: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True))


class Decoder(nn.Module):
    """Four decoder levels with lateral skips, image-patch references and gradient attention.

    Inputs: the normalised image ``x [B, 3, H, W]`` and the features ``x1..x4`` (channels
    ``c1..c4``, strides 4, 8, 16, 32; ``x4`` already squeezed). Output: logits ``[B, 1, H, W]``.
    """

    def __init__(self, config: BiRefNetConfig) -> None:
        super().__init__()
        c4, c3, c2, c1 = config.channels
        e4, e3, e2, e1 = c4 // 8, c3 // 8, c2 // 8, c1 // 8
        inner, aspp, grad = config.decoder_width, config.aspp_width, config.gradient_width
        sampling = config.deform_sampling
        self.patch_order = config.patch_order
        # Patch grids are 32, 16, 8, 4 and 1 cells a side at strides 32 … 1.
        self.ipt_blk5 = PatchBranch(3 * 32 * 32, e4, inner)
        self.ipt_blk4 = PatchBranch(3 * 16 * 16, e4, inner)
        self.ipt_blk3 = PatchBranch(3 * 8 * 8, e3, inner)
        self.ipt_blk2 = PatchBranch(3 * 4 * 4, e2, inner)
        self.ipt_blk1 = PatchBranch(3, e1, inner)
        self.decoder_block4 = BasicDecBlock(c4 + e4, c3, inner, aspp, sampling)
        self.decoder_block3 = BasicDecBlock(c3 + e4, c2, inner, aspp, sampling)
        self.decoder_block2 = BasicDecBlock(c2 + e3, c1, inner, aspp, sampling)
        self.decoder_block1 = BasicDecBlock(c1 + e2, c1 // 2, inner, aspp, sampling)
        self.conv_out1 = nn.Sequential(nn.Conv2d(c1 // 2 + e1, 1, 1))
        self.lateral_block4 = LateralBlock(c3)
        self.lateral_block3 = LateralBlock(c2)
        self.lateral_block2 = LateralBlock(c1)
        # Training-only side outputs: kept so that released checkpoints load strictly.
        self.conv_ms_spvn_4 = nn.Conv2d(c3, 1, 1)
        self.conv_ms_spvn_3 = nn.Conv2d(c2, 1, 1)
        self.conv_ms_spvn_2 = nn.Conv2d(c1, 1, 1)
        self.gdt_convs_4 = _gradient_convs(c3, grad)
        self.gdt_convs_3 = _gradient_convs(c2, grad)
        self.gdt_convs_2 = _gradient_convs(c1, grad)
        self.gdt_convs_pred_4 = nn.Sequential(nn.Conv2d(grad, 1, 1))
        self.gdt_convs_pred_3 = nn.Sequential(nn.Conv2d(grad, 1, 1))
        self.gdt_convs_pred_2 = nn.Sequential(nn.Conv2d(grad, 1, 1))
        self.gdt_convs_attn_4 = nn.Sequential(nn.Conv2d(grad, 1, 1))
        self.gdt_convs_attn_3 = nn.Sequential(nn.Conv2d(grad, 1, 1))
        self.gdt_convs_attn_2 = nn.Sequential(nn.Conv2d(grad, 1, 1))

    def _patches(self, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return stack_patches(x, (like.shape[2], like.shape[3]), self.patch_order)

    def forward(
        self, x: torch.Tensor, x1: torch.Tensor, x2: torch.Tensor, x3: torch.Tensor, x4: torch.Tensor
    ) -> torch.Tensor:
        p4 = self.decoder_block4(torch.cat([x4, self.ipt_blk5(self._patches(x, x4))], dim=1))
        p4 = p4 * torch.sigmoid(self.gdt_convs_attn_4(self.gdt_convs_4(p4)))
        t = resize(p4, x3.shape[2:]) + self.lateral_block4(x3)
        p3 = self.decoder_block3(torch.cat([t, self.ipt_blk4(self._patches(x, x3))], dim=1))
        p3 = p3 * torch.sigmoid(self.gdt_convs_attn_3(self.gdt_convs_3(p3)))
        t = resize(p3, x2.shape[2:]) + self.lateral_block3(x2)
        p2 = self.decoder_block2(torch.cat([t, self.ipt_blk3(self._patches(x, x2))], dim=1))
        p2 = p2 * torch.sigmoid(self.gdt_convs_attn_2(self.gdt_convs_2(p2)))
        t = resize(p2, x1.shape[2:]) + self.lateral_block2(x1)
        p1 = self.decoder_block1(torch.cat([t, self.ipt_blk2(self._patches(x, x1))], dim=1))
        p1 = resize(p1, x.shape[2:])
        return self.conv_out1(torch.cat([p1, self.ipt_blk1(x)], dim=1))


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


class BiRefNet(nn.Module):
    """BiRefNet for inference: ``forward(x [B, 3, H, W] normalised RGB) → logits [B, 1, H, W]``.

    H and W must be multiples of 32. ``sigmoid(logits)`` is the foreground probability.
    """

    def __init__(self, config: BiRefNetConfig) -> None:
        super().__init__()
        self.config = config
        self.bb = SwinTransformer(config.backbone)
        c4, c3, c2, c1 = config.channels
        self.squeeze_module = nn.Sequential(
            BasicDecBlock(c4 + c3 + c2 + c1, c4, config.decoder_width, config.aspp_width, config.deform_sampling)
        )
        self.decoder = Decoder(config)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Backbone at full and half resolution, concatenated per stage: ``[x1, x2, x3, x4]``."""
        full = self.bb(x)
        half = self.bb(resize(x, (x.shape[2] // 2, x.shape[3] // 2)))
        return [torch.cat([f, resize(g, f.shape[2:])], dim=1) for f, g in zip(full, half, strict=True)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"BiRefNet expects a [B, 3, H, W] tensor, got shape {tuple(x.shape)}")
        if height % 32 or width % 32:
            raise ValueError(
                f"BiRefNet needs an input whose height and width are multiples of 32; got {height}x{width}"
            )
        x1, x2, x3, x4 = self.forward_features(x)
        size4 = x4.shape[2:]
        x4 = torch.cat([resize(x1, size4), resize(x2, size4), resize(x3, size4), x4], dim=1)
        x4 = self.squeeze_module(x4)
        return self.decoder(x, x1, x2, x3, x4)


# --------------------------------------------------------------------------------------------
# Checkpoint filter
# --------------------------------------------------------------------------------------------


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model: wrong architecture, backbone or key set."""


@dataclass(frozen=True)
class FilterReport:
    """What :func:`checkpoint_filter_fn` did to a foreign state dict."""

    stripped_prefixes: tuple[str, ...] = ()
    cast_dtypes: tuple[str, ...] = ()
    training_only_keys: int = 0
    recomputed_buffers: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)


def _strip_wrappers(key: str) -> tuple[str, tuple[str, ...]]:
    stripped: list[str] = []
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
                stripped.append(prefix)
                changed = True
    return key, tuple(stripped)


def _describe_keys(keys: Iterable[str], limit: int = 12) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    more = f" … and {len(keys) - limit} more" if len(keys) > limit else ""
    return f"{len(keys)}: {shown}{more}"


def is_legacy_state_dict(keys: Iterable[str]) -> bool:
    """True for the pre-2024-05 architecture (no level-5 patch branch, no level-4 attention)."""
    keys = set(keys)
    has_decoder = any(k.startswith("decoder.decoder_block4.") for k in keys)
    has_current = any(k.startswith(("decoder.ipt_blk5.", "decoder.gdt_convs_4.")) for k in keys)
    return has_decoder and not has_current


def checkpoint_filter_fn(
    state_dict: Mapping[str, torch.Tensor], model: BiRefNet
) -> tuple[dict[str, torch.Tensor], FilterReport]:
    """Turn a released BiRefNet state dict into one that ``model.load_state_dict(strict=True)`` takes.

    Strips any leading combination of ``module.`` (DDP) and ``_orig_mod.`` (torch.compile), casts
    floating tensors (float16 files exist) to the model's dtype, and checks the architecture:
    the legacy pre-2024-05 decoder and a backbone of the wrong size are rejected with a message
    that says so. Missing or unexpected keys raise :class:`CheckpointError` naming them. The
    training-only heads are kept (the model has them) and counted in the report.
    """
    model_state = model.state_dict()
    reference = next(iter(model_state.values()))
    float_dtype = next((t.dtype for t in model_state.values() if t.is_floating_point()), reference.dtype)

    out: dict[str, torch.Tensor] = {}
    stripped: set[str] = set()
    cast: set[str] = set()
    for raw_key, tensor in state_dict.items():
        key, prefixes = _strip_wrappers(raw_key)
        stripped.update(prefixes)
        if not isinstance(tensor, torch.Tensor):
            raise CheckpointError(f"checkpoint entry {raw_key!r} is not a tensor")
        if tensor.is_floating_point() and tensor.dtype != float_dtype:
            cast.add(str(tensor.dtype).replace("torch.", ""))
            tensor = tensor.to(float_dtype)
        out[key] = tensor

    if is_legacy_state_dict(out):
        raise CheckpointError(
            "this checkpoint uses the legacy BiRefNet architecture (before 2024-05: no "
            "decoder.ipt_blk5 / decoder.gdt_convs_4, a single 3x3 deformable ASPP branch). It cannot be "
            "loaded into the current network; use a current release such as ZhengPeng7/BiRefNet."
        )
    embed_key = "bb.patch_embed.proj.weight"
    if embed_key in out and embed_key in model_state and out[embed_key].shape != model_state[embed_key].shape:
        found, expected = out[embed_key].shape[0], model_state[embed_key].shape[0]
        names = {192: "Swin-L (general, HR, portrait, matting, ...)", 96: "Swin-T (lite, lite-2K)"}
        raise CheckpointError(
            f"backbone mismatch: the checkpoint's embed width is {found} ({names.get(found, 'unknown')}) "
            f"but the model was built with {expected} ({names.get(expected, 'a custom config')}); "
            "pick the variant that matches the file"
        )

    missing = set(model_state) - set(out)
    unexpected = set(out) - set(model_state)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys ({_describe_keys(missing)})")
        if unexpected:
            parts.append(f"unexpected keys ({_describe_keys(unexpected)})")
        raise CheckpointError("checkpoint does not match the model: " + "; ".join(parts))
    mismatched = [k for k, t in out.items() if tuple(t.shape) != tuple(model_state[k].shape)]
    if mismatched:
        details = ", ".join(
            f"{k} {tuple(out[k].shape)} vs {tuple(model_state[k].shape)}" for k in sorted(mismatched)[:8]
        )
        raise CheckpointError(f"{len(mismatched)} checkpoint tensors have the wrong shape: {details}")

    training_only = sum(1 for k in out if k.startswith(TRAINING_ONLY_PREFIXES))
    report = FilterReport(
        stripped_prefixes=tuple(sorted(stripped)),
        cast_dtypes=tuple(sorted(cast)),
        training_only_keys=training_only,
    )
    return out, report


# --------------------------------------------------------------------------------------------
# Builder
# --------------------------------------------------------------------------------------------


def create_model(config: BiRefNetConfig, *, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> BiRefNet:
    """Build a BiRefNet in eval mode (random weights; load a checkpoint next)."""
    with torch.device(device):
        model = BiRefNet(config)
    return model.to(dtype=dtype).eval()  # integer index buffers keep their dtype


def with_patch_order(config: BiRefNetConfig, order: PatchOrder | str) -> BiRefNetConfig:
    return replace(config, patch_order=PatchOrder(order))
