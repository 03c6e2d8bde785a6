from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.model.variants import get_variant
from pipelines.weights import (
    WEIGHTS_ENV,
    WeightsNotFoundError,
    WeightsVerificationError,
    find_weights,
    resolve_weights,
    verify_weights,
)


def _fake_hf_cache(root: Path, repo: str, filename: str, payload: bytes = b"weights") -> Path:
    folder = root / f"models--{repo.replace('/', '--')}"
    revision = "0123456789abcdef0123456789abcdef01234567"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(revision)
    snapshot = folder / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (snapshot / filename).write_bytes(payload)
    return snapshot / filename


def test_explicit_path_wins(tmp_path: Path) -> None:
    file = tmp_path / "mine.pth"
    file.write_bytes(b"x")
    path, _ = find_weights("general", file, environ={})
    assert path == file


def test_environment_variable_is_used(tmp_path: Path) -> None:
    file = tmp_path / "env.safetensors"
    file.write_bytes(b"x")
    assert resolve_weights("general", environ={WEIGHTS_ENV: str(file)}, allow_download=False) == file


def test_weights_found_in_huggingface_cache(tmp_path: Path) -> None:
    cached = _fake_hf_cache(tmp_path, "ZhengPeng7/BiRefNet", "model.safetensors")
    path = resolve_weights("general", cache_dir=tmp_path, environ={}, allow_download=False)
    assert path.resolve() == cached.resolve()


def test_missing_explicit_file_explains_how_to_place_weights(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFoundError) as info:
        resolve_weights("general", tmp_path / "nope.pth", environ={})
    message = str(info.value)
    assert "configured file does not exist" in message
    assert WEIGHTS_ENV in message and "ZhengPeng7/BiRefNet" in message and "download_model.py" in message


def test_offline_without_cache_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFoundError) as info:
        resolve_weights("lite", cache_dir=tmp_path, environ={}, allow_download=False)
    message = str(info.value)
    assert "downloads are disabled" in message
    assert str(tmp_path) in message and "model.safetensors" in message


def test_verification_rejects_wrong_sha256(tmp_path: Path) -> None:
    file = tmp_path / "model.safetensors"
    file.write_bytes(b"abc")
    verify_weights(file, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", 3)
    with pytest.raises(WeightsVerificationError, match="sha256"):
        verify_weights(file, "0" * 64, None)
    with pytest.raises(WeightsVerificationError, match="bytes"):
        verify_weights(file, None, 4)


def test_importing_weights_module_does_not_touch_the_network() -> None:
    import socket
    import subprocess
    import sys

    code = (
        "import socket\n"
        "def refuse(*a, **k): raise SystemExit('network used at import')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "import pipelines.weights, pipelines.segmenter, pipelines.model\n"
    )
    assert socket  # the child process patches its own socket module
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def test_demo_variant_needs_no_download() -> None:
    assert get_variant("demo").hf_repo == ""
