"""Registry of the released BiRefNet variants, and the local demo model.

Each variant carries what is needed to fetch, build and feed it: the backbone, the inference
resolution (``(height, width)``), where the weights live (Hugging Face repo and file, and the
GitHub-release file name), and the normalisation. Preprocessing reads the resolution and the
mean/std from here, so nobody retypes them.

All current releases share one architecture; only the backbone (Swin-L or Swin-T) and the training
resolution differ (architecture.md §11). The legacy pre-2024-05 ``BiRefNet-legacy`` is deliberately
absent: its key set is detected and rejected by the checkpoint loader.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from pipelines.model.birefnet import SWIN_L, SWIN_T, BiRefNetConfig, SwinConfig

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

# A small config of the same architecture: trains on a CPU in minutes, serves the offline demo.
SWIN_DEMO = SwinConfig(embed_dim=24, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8), window_size=8)
DEMO_CONFIG = BiRefNetConfig(backbone=SWIN_DEMO, decoder_width=16, aspp_width=32, gradient_width=8)


class UnknownVariantError(ValueError):
    """A variant name that is not in the registry; the message lists the known ones."""


@dataclass(frozen=True)
class Variant:
    """One released set of weights and how to use it.

    Attributes:
        name: registry key used in configs (``general``, ``lite``, …).
        display_name: what the API reports in ``X-Model-Version`` and ``/health``.
        config: the network to build.
        input_size: inference resolution ``(height, width)``, multiples of 32.
        hf_repo: Hugging Face repository id ("" for local-only variants).
        hf_filename: weights file inside the repository.
        release_filename: the GitHub-release ``.pth`` name, for users who download by hand.
        sha256, size_bytes: checksum and size of ``hf_filename`` when known (verified on download).
        mean, std: RGB normalisation applied to ``[0, 1]`` pixels on the inference device.
        description: one line on what it is for.
    """

    name: str
    display_name: str
    config: BiRefNetConfig
    input_size: tuple[int, int]
    hf_repo: str
    hf_filename: str = "model.safetensors"
    release_filename: str = ""
    sha256: str | None = None
    size_bytes: int | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    description: str = ""

    @property
    def backbone_name(self) -> str:
        return {SWIN_L: "swin_v1_l", SWIN_T: "swin_v1_t", SWIN_DEMO: "swin_demo"}.get(
            self.config.backbone, "custom"
        )


_GENERAL = BiRefNetConfig(backbone=SWIN_L)
_LITE = BiRefNetConfig(backbone=SWIN_T)


def _release(name: str, repo: str, size: tuple[int, int], release_file: str, description: str,
             config: BiRefNetConfig = _GENERAL, display_name: str | None = None) -> Variant:
    return Variant(
        name=name,
        display_name=display_name or repo,
        config=config,
        input_size=size,
        hf_repo=f"ZhengPeng7/{repo}",
        release_filename=release_file,
        description=description,
    )


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        # The repo is plain "BiRefNet"; the API names the model as the spec does.
        _release("general", "BiRefNet", (1024, 1024), "BiRefNet-general-epoch_244.pth",
                 "default: best all-round quality for background removal", display_name="BiRefNet-general"),
        _release("lite", "BiRefNet_lite", (1024, 1024), "BiRefNet-general-bb_swin_v1_tiny-epoch_232.pth",
                 "Swin-T backbone: about 4x fewer FLOPs, for latency- or CPU-bound use", _LITE),
        _release("lite-2k", "BiRefNet_lite-2K", (1440, 2560), "BiRefNet_lite-general-2K-epoch_232.pth",
                 "Swin-T at 2560x1440 (w x h): video frames and 2K images", _LITE),
        _release("portrait", "BiRefNet-portrait", (1024, 1024), "BiRefNet-portrait-epoch_150.pth",
                 "people and portraits with hair"),
        _release("matting", "BiRefNet-matting", (1024, 1024), "BiRefNet-matting-epoch_100.pth",
                 "soft alpha (hair, glass, smoke), trimap-free matting"),
        _release("hr", "BiRefNet_HR", (2048, 2048), "BiRefNet_HR-general-epoch_130.pth",
                 "high resolution (2048x2048): large originals with fine detail"),
        _release("hr-matting", "BiRefNet_HR-matting", (2048, 2048), "BiRefNet_HR-matting-epoch_135.pth",
                 "high-resolution matting (2048x2048)"),
        _release("dynamic", "BiRefNet_dynamic", (1024, 1024), "BiRefNet_dynamic-general-epoch_174.pth",
                 "trained at 256-2304 px: robust at any resolution (multiples of 32)"),
        _release("512x512", "BiRefNet_512x512", (512, 512),
                 "BiRefNet-general-resolution_512x512-fp16-epoch_216.pth",
                 "general use at 512x512: about 4x cheaper than 1024"),
        _release("dis5k", "BiRefNet-DIS5K", (1024, 1024), "BiRefNet-DIS-epoch_590.pth",
                 "paper model trained on DIS5K (benchmark use)"),
        _release("hrsod", "BiRefNet-HRSOD", (1024, 1024), "BiRefNet-HRSOD_DHU-epoch_115.pth",
                 "high-resolution salient object detection (benchmark use)"),
        _release("cod", "BiRefNet-COD", (1024, 1024), "BiRefNet-COD-epoch_125.pth",
                 "camouflaged object detection (benchmark use)"),
        _release("massive", "BiRefNet-DIS5K-TR_TEs", (1024, 1024),
                 "BiRefNet-massive-TR_DIS5K_TR_TEs-epoch_420.pth",
                 "trained on the DIS5K train and test sets (massive data)"),
        Variant(
            name="demo",
            display_name="BiRefNet-demo",
            config=DEMO_CONFIG,
            input_size=(192, 192),
            hf_repo="",
            hf_filename="birefnet-demo.safetensors",
            description="small model of the same architecture trained here on synthetic scenes; "
            "offline demo and tests only, not BiRefNet-general",
        ),
    )
}


def get_variant(name: str | Variant) -> Variant:
    """Look a variant up by name (case-insensitive). Unknown names list the known ones."""
    if isinstance(name, Variant):
        return name
    key = name.strip().lower()
    if key not in VARIANTS:
        raise UnknownVariantError(f"unknown BiRefNet variant {name!r}; known variants: {', '.join(VARIANTS)}")
    return VARIANTS[key]


def at_input_size(variant: Variant, size: tuple[int, int] | None) -> Variant:
    """``variant`` served at ``size`` ``(height, width)`` instead of its own (None: unchanged).

    Both sides must be positive multiples of 32, the backbone's total stride. Only ``dynamic`` was
    trained across sizes (256 to 2304); the others were trained at their own size.
    """
    if size is None:
        return variant
    height, width = size
    if height < 32 or width < 32 or height % 32 or width % 32:
        raise ValueError(f"input_size must be two positive multiples of 32 (height, width); got {tuple(size)}")
    return replace(variant, input_size=(int(height), int(width)))
