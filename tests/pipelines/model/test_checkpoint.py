from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from pipelines.model.birefnet import CheckpointError, checkpoint_filter_fn, create_model
from pipelines.model.checkpoint import load_checkpoint, read_state_dict
from tests.pipelines.model.tiny import TINY


def _reference_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    torch.manual_seed(3)
    return {k: (torch.randn_like(v) if v.is_floating_point() else v.clone()) for k, v in model.state_dict().items()}


@pytest.fixture
def source_state(tiny_model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return _reference_state(tiny_model)


def _assert_loaded(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    loaded = model.state_dict()
    for key, value in state.items():
        torch.testing.assert_close(loaded[key], value.to(loaded[key].dtype), rtol=0, atol=0)


@pytest.mark.parametrize("prefix", ["", "module.", "_orig_mod.", "module._orig_mod.", "_orig_mod.module."])
def test_pth_with_wrapper_prefixes_loads_strictly(tmp_path: Path, source_state, prefix: str) -> None:
    path = tmp_path / "weights.pth"
    torch.save({prefix + k: v for k, v in source_state.items()}, path)
    model = create_model(TINY)
    report = load_checkpoint(model, path)
    _assert_loaded(model, source_state)
    assert report.tensors == len(source_state)
    assert set(report.stripped_prefixes) == {p for p in ("module.", "_orig_mod.") if p in prefix}


def test_safetensors_loads_strictly(tmp_path: Path, source_state) -> None:
    path = tmp_path / "model.safetensors"
    save_file(source_state, str(path))
    model = create_model(TINY)
    load_checkpoint(model, path)
    _assert_loaded(model, source_state)


def test_float16_checkpoint_is_cast_to_model_dtype(tmp_path: Path, source_state) -> None:
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in source_state.items()}
    path = tmp_path / "half.safetensors"
    save_file(half, str(path))
    model = create_model(TINY)
    report = load_checkpoint(model, path)
    assert report.cast_from == ("float16",)
    assert all(t.dtype == torch.float32 for t in model.state_dict().values() if t.is_floating_point())
    _assert_loaded(model, half)


def test_training_only_heads_are_loaded_and_counted(tiny_model, source_state) -> None:
    _, report = checkpoint_filter_fn(source_state, tiny_model)
    # conv_ms_spvn_{4,3,2} and gdt_convs_pred_{4,3,2}: weight + bias each
    assert report.training_only_keys == 12


def test_missing_key_is_named(tiny_model, source_state) -> None:
    del source_state["decoder.conv_out1.0.bias"]
    with pytest.raises(CheckpointError, match=r"missing keys \(1: decoder\.conv_out1\.0\.bias\)"):
        checkpoint_filter_fn(source_state, tiny_model)


def test_unexpected_key_is_named(tiny_model, source_state) -> None:
    source_state["decoder.refiner.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1: decoder\.refiner\.weight\)"):
        checkpoint_filter_fn(source_state, tiny_model)


def test_wrong_shape_is_reported(tiny_model, source_state) -> None:
    source_state["decoder.conv_out1.0.weight"] = torch.zeros(1, 3, 1, 1)
    with pytest.raises(CheckpointError, match="wrong shape: decoder.conv_out1.0.weight"):
        checkpoint_filter_fn(source_state, tiny_model)


def test_legacy_architecture_is_rejected_by_key_set(tiny_model, source_state) -> None:
    legacy = {k: v for k, v in source_state.items()
              if not k.startswith(("decoder.ipt_blk5.", "decoder.gdt_convs_4.", "decoder.gdt_convs_attn_4.",
                                   "decoder.gdt_convs_pred_4."))}
    with pytest.raises(CheckpointError, match="legacy BiRefNet architecture"):
        checkpoint_filter_fn(legacy, tiny_model)


def test_backbone_mismatch_names_both_backbones(source_state) -> None:
    from pipelines.model.birefnet import SWIN_T, BiRefNetConfig

    with torch.device("meta"):
        lite = create_model(BiRefNetConfig(backbone=SWIN_T))
    general_like = dict(source_state)
    general_like["bb.patch_embed.proj.weight"] = torch.zeros(192, 3, 4, 4)
    with pytest.raises(CheckpointError, match=r"backbone mismatch.*Swin-L.*Swin-T"):
        checkpoint_filter_fn(general_like, lite)


def test_pth_with_arbitrary_pickled_objects_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"weights": Path("/etc/passwd")}, path)  # a non-tensor class: needs full unpickling
    with pytest.raises(CheckpointError, match="weights-only"):
        read_state_dict(path)


def test_unknown_suffix_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "weights.onnx"
    path.write_bytes(b"onnx")
    with pytest.raises(CheckpointError, match="unsupported checkpoint format"):
        read_state_dict(path)
