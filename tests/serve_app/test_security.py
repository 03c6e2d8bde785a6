"""Security and failure mapping without Ray: the API key registry, the configs that enable it, the
error mapping of lost replicas and unexpected failures, and the absence of temporary files."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayTaskError
from ray.serve.exceptions import DeploymentUnavailableError, RayServeException
from ray.serve.schema import ServeDeploySchema

from pipelines.errors import UnauthorizedError
from serve_app.api_keys import (
    ApiKeyConfigError,
    ApiKeyRegistry,
    hash_api_key,
    load_key_registry,
    parse_key_entries,
)
from serve_app.app import key_registry
from serve_app.args import ApiKeysArgs, AppArgs
from serve_app.responses import error_parts, to_service_error

ROOT = Path(__file__).resolve().parents[2]
KEY = "s3cret-key"
DIGEST = hashlib.sha256(KEY.encode()).hexdigest()


# -- the key registry ---------------------------------------------------------------------------


def test_keys_are_stored_as_their_sha256() -> None:
    assert hash_api_key(KEY) == DIGEST


def test_registry_matches_a_listed_key_with_its_tier_and_a_digest_prefix_as_id() -> None:
    registry = ApiKeyRegistry.from_hex({DIGEST: "pro", "0" * 64: "basic"}, required=True)
    match = registry.authenticate(KEY)
    assert match is not None and match.tier == "pro" and match.client_id == DIGEST[:12]
    assert KEY not in repr(registry)


@pytest.mark.parametrize("presented", [None, "", "wrong", KEY.upper(), DIGEST])
def test_required_keys_refuse_missing_and_unknown_keys_with_401(presented: str | None) -> None:
    registry = ApiKeyRegistry.from_hex({DIGEST: "free"}, required=True)
    with pytest.raises(UnauthorizedError) as caught:
        registry.authenticate(presented)
    status, body, _ = error_parts(caught.value)
    assert status == 401 and body["error_code"] == "UNAUTHORIZED" and KEY not in body["detail"]


def test_optional_keys_let_anonymous_and_unknown_callers_through() -> None:
    registry = ApiKeyRegistry.from_hex({DIGEST: "free"}, required=False)
    assert registry.authenticate(None) is None and registry.authenticate("made-up") is None


def test_key_entries_parse_from_lines_and_commas_with_comments() -> None:
    text = f"# comment, with a comma\n{DIGEST} pro  # trailing\n\n{'a' * 64},{'b' * 64} basic\n"
    assert parse_key_entries(text, "free", "test") == {DIGEST: "pro", "a" * 64: "free", "b" * 64: "basic"}


@pytest.mark.parametrize("text", [KEY, f"{DIGEST} pro extra", "abc123 pro"])
def test_a_plain_key_or_malformed_entry_fails_with_its_source(text: str) -> None:
    with pytest.raises(ApiKeyConfigError, match="keys.txt, entry 1"):
        parse_key_entries(text, "free", "keys.txt")


def test_registry_merges_inline_file_and_environment(tmp_path: Path) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text(f"{hash_api_key('from-file')} basic\n")
    args = ApiKeysArgs(required=True, hashes={DIGEST: "pro"}, file=str(key_file), env_var="KEYS")
    registry = load_key_registry(args, "free", {"KEYS": hash_api_key("from-env")})
    tiers = {key: match.tier for key in (KEY, "from-file", "from-env") if (match := registry.lookup(key))}
    assert tiers == {KEY: "pro", "from-file": "basic", "from-env": "free"}


def test_missing_key_sources_and_required_without_keys_fail_the_deploy(tmp_path: Path) -> None:
    with pytest.raises(ApiKeyConfigError, match="cannot be read"):
        load_key_registry(ApiKeysArgs(file=str(tmp_path / "absent")), "free", {})
    with pytest.raises(ApiKeyConfigError, match="KEYS is not set"):
        load_key_registry(ApiKeysArgs(env_var="KEYS"), "free", {})
    with pytest.raises(ApiKeyConfigError, match="no key digest"):
        load_key_registry(ApiKeysArgs(required=True), "free", {})


def test_config_refuses_plain_keys_and_unknown_tiers(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="never put a key itself"):
        ApiKeysArgs(hashes={KEY: "pro"})
    with pytest.raises(ValidationError, match="unknown tiers"):
        AppArgs.model_validate({"api_keys": {"hashes": {DIGEST: "platinum"}}})
    key_file = tmp_path / "keys"
    key_file.write_text(f"{DIGEST} platinum\n")
    with pytest.raises(ApiKeyConfigError, match="unknown tiers"):
        key_registry(AppArgs.model_validate({"api_keys": {"file": str(key_file)}}))


def _app_args(path: Path) -> AppArgs:
    config = yaml.safe_load(path.read_text())
    ServeDeploySchema.model_validate(config)
    return AppArgs.model_validate(config["applications"][0]["args"])


def test_keys_are_off_for_local_use_and_required_in_the_production_example() -> None:
    assert not _app_args(ROOT / "configs" / "offline.yaml").api_keys.required
    assert not _app_args(ROOT / "serve_config.yaml").api_keys.required
    production = _app_args(ROOT / "configs" / "production.yaml")
    assert production.api_keys.required and production.api_keys.file and production.rate_limit.enabled


# -- failures the client sees ---------------------------------------------------------------------


def _upstream_crash() -> RayServeException:
    wrapped = RayServeException("Request to deployment 'Inference' failed because an upstream actor died")
    wrapped.__cause__ = ActorDiedError()
    return wrapped


@pytest.mark.parametrize(
    "lost",
    [
        ActorDiedError(),
        ActorUnavailableError("replica unreachable", None),
        DeploymentUnavailableError("Inference"),  # type: ignore[arg-type]
        _upstream_crash(),
        RayTaskError("segment", "Traceback ...", ActorDiedError()),
    ],
    ids=["actor-died", "actor-unavailable", "deployment-unavailable", "upstream-crash", "task-wrapping-death"],
)
def test_a_replica_lost_mid_request_is_503_with_retry_after(lost: BaseException) -> None:
    status, body, headers = error_parts(to_service_error(lost, retry_after_s=3))
    assert status == 503 and body["error_code"] == "SERVICE_OVERLOADED"
    assert headers == {"Retry-After": "3"}
    assert "actor" not in body["detail"].lower() and "Traceback" not in str(body)


def test_an_unexpected_failure_is_a_generic_500_without_internals() -> None:
    secret = RuntimeError("CUDA error: out of memory at /opt/secret/kernel.cu:347")
    for raised in (secret, RayTaskError("segment", "Traceback (most recent call last): /opt/secret", secret)):
        status, body, headers = error_parts(to_service_error(raised))
        assert (status, body, headers) == (
            500,
            {"detail": "Model inference failed", "error_code": "INFERENCE_ERROR"},
            {},
        )


def test_no_temporary_files_are_written_by_the_service_code() -> None:
    writes_temp = re.compile(r"\b(tempfile|NamedTemporaryFile|SpooledTemporaryFile|mkstemp|mkdtemp|UploadFile)\b")
    sources = sorted((ROOT / "serve_app").rglob("*.py")) + sorted((ROOT / "pipelines").rglob("*.py"))
    offenders = [str(path.relative_to(ROOT)) for path in sources if writes_temp.search(path.read_text())]
    assert offenders == []
