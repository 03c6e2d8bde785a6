from __future__ import annotations

import pytest

from pipelines.model.birefnet import SWIN_L, SWIN_T
from pipelines.model.variants import VARIANTS, UnknownVariantError, get_variant

RELEASED = ["general", "lite", "lite-2k", "portrait", "matting", "hr", "hr-matting", "dynamic", "512x512",
            "dis5k", "hrsod", "cod", "massive"]


def test_every_current_release_is_registered() -> None:
    assert set(RELEASED) <= set(VARIANTS)


def test_unknown_variant_lists_known_names() -> None:
    with pytest.raises(UnknownVariantError) as info:
        get_variant("birefnet-xl")
    for name in RELEASED:
        assert name in str(info.value)


def test_lookup_is_case_insensitive() -> None:
    assert get_variant("General").name == "general"


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_input_sizes_are_multiples_of_32(name: str) -> None:
    height, width = VARIANTS[name].input_size
    assert height % 32 == 0 and width % 32 == 0


def test_backbones_follow_the_releases() -> None:
    assert get_variant("lite").config.backbone == SWIN_T
    assert get_variant("lite-2k").config.backbone == SWIN_T
    assert get_variant("lite-2k").input_size == (1440, 2560)
    for name in ("general", "portrait", "matting", "hr", "dynamic", "cod"):
        assert get_variant(name).config.backbone == SWIN_L
    assert get_variant("hr").input_size == (2048, 2048)
    assert get_variant("general").hf_repo == "ZhengPeng7/BiRefNet"


def test_models_are_named_as_the_api_reports_them() -> None:
    # X-Model-Version, processing_info.model_version and /health's model (spec 3.1, 3.2)
    assert get_variant("general").display_name == "BiRefNet-general"
    assert get_variant("lite").display_name == "BiRefNet_lite"
    assert get_variant("portrait").display_name == "BiRefNet-portrait"


def test_demo_model_is_not_presented_as_general() -> None:
    demo = get_variant("demo")
    assert "general" not in demo.display_name.lower()
    assert demo.hf_repo == ""
