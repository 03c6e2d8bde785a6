"""Typed application arguments: the ``args:`` block of a Serve config file.

``serve_config.yaml`` → :class:`AppArgs` → each stage's own settings → ``.bind()``. Every model
forbids unknown keys, so a typo in the config fails at deploy time with pydantic's message naming
the bad key instead of being ignored. Replica counts, autoscaling and CPU shares of the stages live
in the config's ``deployments:`` section, except the Inference stage's GPU request, which the
builder decides (see :func:`serve_app.app.inference_actor_options`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

_MEBIBYTE = 1024 * 1024
# A browser origin: scheme://host[:port], no path or trailing slash (what the Origin header carries).
_ORIGIN = r"^(\*|https?://[^/\s]+)$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# A model input side: the backbone's total stride is 32.
_Side = Annotated[int, Field(ge=32, multiple_of=32)]


class ModelArgs(_Strict):
    """Which BiRefNet to serve and where (mirrors ``pipelines.segmenter.SegmenterSettings``).

    Attributes:
        variant: registry name: ``general`` (downloaded to the Hugging Face cache on first start),
            ``demo`` (small, bundled or deterministic weights, no network) and the others the
            registry lists.
        input_size: ``[height, width]`` to serve at instead of the variant's own, multiples of 32:
            ``dynamic`` was trained from 256 to 2304; the others lose quality away from theirs.
        weights: explicit checkpoint path; None uses the HF cache / bundled file.
        device: ``auto`` asks for one GPU per Inference replica when the Ray cluster has GPUs at
            deploy time and runs on CPU otherwise; ``cuda`` always asks for a GPU (for clusters
            whose GPU nodes are added by an autoscaler); ``cpu`` never does.
        dtype: inference precision. On the CPU, bfloat16 only where the CPU has it in hardware
            (AVX512-BF16 or AMX) and float16 never: float32 instead (``dtype_on_device``).
        allow_download: allow fetching missing weights from Hugging Face.
        num_threads: torch intra-op threads per replica on CPU.
        memory_check: pre-check free GPU memory per batch: a batch that does not fit runs in
            smaller chunks; 503 GPU_MEMORY_EXHAUSTED only when one image does not fit.
        patch_order: decoder patch-channel order, ``current`` (official code) or ``legacy``
            (pre-2024-11 code) for A/B tests with real weights.
        deform_sampling: deformable-conv implementation, ``auto`` (grid_sample on CPU, where it
            is 1.3–1.6× faster, and under TensorRT or CUDA graphs; torchvision's kernel otherwise
            on CUDA), ``torchvision`` or ``grid_sample``.
        backend: ``eager``, ``compile`` (torch.compile) or ``tensorrt`` (torch-tensorrt extra); an
            unavailable one falls back along tensorrt → compile → eager, reported in /health.
        compile_mode: torch.compile mode (``reduce-overhead`` adds CUDA graphs).
        engine_cache_dir: TensorRT engine cache folder (None → ~/.cache/birefnet-serve/engines).
        batch_sizes: batch sizes compiled backends are built for; keep the largest ≥ Inference's
            ``max_batch_size`` (batches are padded to the nearest one).
        tf32: float32 on CUDA uses TF32 tensor cores, as the official inference code does; false
            for full float32.
        cudnn_benchmark: cuDNN times its convolution algorithms per input shape; unset: on for
            the compiled backends (fixed shapes, timed at warm-up), off for eager.
        segmenter_factory: ``"module:callable"`` building the segmenter from its settings; None is
            ``pipelines.segmenter.Segmenter.from_settings``. An injection point for tests and for
            alternative backends.
    """

    variant: str = "general"
    input_size: tuple[_Side, _Side] | None = None
    weights: str | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    allow_download: bool = True
    num_threads: int | None = Field(default=None, ge=1)
    memory_check: bool = True
    patch_order: Literal["current", "legacy"] = "current"
    deform_sampling: Literal["auto", "torchvision", "grid_sample"] = "auto"
    backend: Literal["eager", "compile", "tensorrt"] = "eager"
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"
    engine_cache_dir: str | None = None
    batch_sizes: tuple[Annotated[int, Field(ge=1)], ...] = Field(default=(1, 2, 4), min_length=1)
    tf32: bool = True
    cudnn_benchmark: bool | None = None
    segmenter_factory: str | None = Field(default=None, pattern=r"^[\w.]+:[\w.]+$")

    @model_validator(mode="after")
    def _batch_sizes_distinct(self) -> ModelArgs:
        if len(set(self.batch_sizes)) != len(self.batch_sizes):
            raise ValueError(f"batch_sizes must be distinct; got {list(self.batch_sizes)}")
        return self


class UploadArgs(_Strict):
    """Upload limits of spec §3.2 / §6.1 (mirrors ``pipelines.validate.UploadLimits``)."""

    max_file_mb: float = Field(default=10.0, gt=0)
    min_side: int = Field(default=64, ge=1)
    max_long_side: int = Field(default=7680, ge=1)
    max_short_side: int = Field(default=4320, ge=1)
    max_megapixels: float = Field(default=50.0, gt=0)
    max_bomb_ratio: float = Field(default=1000.0, gt=0)
    max_jpeg_scans: int = Field(default=500, ge=1)

    @model_validator(mode="after")
    def _sides_ordered(self) -> UploadArgs:
        if not self.min_side <= self.max_short_side <= self.max_long_side:
            raise ValueError(
                "upload limits must satisfy min_side <= max_short_side <= max_long_side; got "
                f"{self.min_side}, {self.max_short_side}, {self.max_long_side}"
            )
        return self

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * _MEBIBYTE)

    @property
    def max_pixels(self) -> int:
        return int(self.max_megapixels * 1_000_000)


class IngressArgs(_Strict):
    """HTTP behaviour of the ingress.

    Attributes:
        timeout_s: processing budget per image, counted from the end of the upload (504
            PROCESSING_TIMEOUT past it). Keep
            ``http_options.request_timeout_s`` above it so the spec's 504 wins over Serve's 408.
        overloaded_retry_after_s: ``Retry-After`` of 503 SERVICE_OVERLOADED.
        cors_allow_origins: origins whose browser pages may call the API from another origin
            (``https://app.example.com``, ``http://localhost:3000``; ``*`` for any). Empty: no
            CORS headers, so only same-origin pages (or a reverse proxy on their origin) can.
    """

    timeout_s: float = Field(default=30.0, gt=0)
    overloaded_retry_after_s: float = Field(default=2.0, gt=0)
    cors_allow_origins: tuple[Annotated[str, Field(pattern=_ORIGIN)], ...] = ()


class InferenceArgs(_Strict):
    """Resources and reporting of the Inference replicas.

    Attributes:
        num_cpus: CPU share of one replica (the builder owns Inference's ``ray_actor_options``
            because it decides ``num_gpus``; do not set them in ``deployments:``).
        num_gpus: GPUs per replica when the device resolves to CUDA (1: BiRefNet does not share a
            GPU safely, Ray fractions do not isolate memory).
        warm_up: run one dummy batch before the replica reports ready.
        report_interval_s: how often each replica reports its state to Telemetry; /ready and
            /health forget a replica after three missed reports.
        reload_interval_s: how often a replica whose weights were missing tries to load again.
    """

    num_cpus: float = Field(default=1.0, ge=0)
    num_gpus: float = Field(default=1.0, gt=0, le=1)
    warm_up: bool = True
    report_interval_s: float = Field(default=10.0, gt=0)
    reload_interval_s: float = Field(default=30.0, gt=0)


class RateRule(_Strict):
    """At most ``limit`` requests in any sliding window of ``period_s`` seconds."""

    limit: int = Field(ge=1)
    period_s: float = Field(gt=0)

    def describe(self) -> str:
        """``"30 requests per minute"`` style text for the 429 ``detail``."""
        units = {1.0: "second", 60.0: "minute", 3600.0: "hour", 86400.0: "day"}
        unit = units.get(float(self.period_s))
        noun = "request" if self.limit == 1 else "requests"
        if unit is not None:
            return f"{self.limit} {noun} per {unit}"
        return f"{self.limit} {noun} per {self.period_s:g} seconds"


class ConcurrencyRule(_Strict):
    """At most ``concurrent`` requests of one client open at once: admitted and not yet answered
    (uploading, queued or being processed)."""

    concurrent: int = Field(ge=1)

    @property
    def limit(self) -> int:
        return self.concurrent

    def describe(self) -> str:
        """``"3 concurrent requests"`` for the 429 ``detail``."""
        return f"{self.concurrent} concurrent request{'' if self.concurrent == 1 else 's'}"


TierRule = RateRule | ConcurrencyRule

# The spec's "30/minute" and "3/second  # Max 3 concurrent requests", all three enforced.
_SPEC_RULES = (RateRule(limit=30, period_s=60.0), RateRule(limit=3, period_s=1.0), ConcurrencyRule(concurrent=3))


def _default_tiers() -> dict[str, tuple[TierRule, ...]]:
    return {
        "free": _SPEC_RULES,
        "basic": (RateRule(limit=120, period_s=60.0), RateRule(limit=10, period_s=1.0), ConcurrencyRule(concurrent=10)),
        "pro": (RateRule(limit=600, period_s=60.0), RateRule(limit=30, period_s=1.0), ConcurrencyRule(concurrent=30)),
    }


class RateLimitArgs(_Strict):
    """Cluster-wide per-client rate limits (spec §6.2: 30/minute, 3/second, 3 concurrent).

    A client is its API key when the key is listed in the ``api_keys`` registry (its tier comes
    from there), and its address otherwise: an unknown key gets the default tier, counted against
    the address, so inventing keys does not buy a fresh quota.

    Attributes:
        enabled: off in the local configs, on in ``serve_config.yaml``.
        tiers: tier name → rules that must all hold: at least one rate rule
            (``{limit, period_s}``) and at most one concurrency cap (``{concurrent}``).
        default_tier: the tier of clients without a known key, and of keys listed without a tier.
        open_request_ttl_s: how long an open request keeps counting towards its client's
            concurrency cap once its Ingress replica stops renewing it (every third of this while
            the request is open): what a replica that died costs the clients it was serving.
    """

    enabled: bool = True
    tiers: dict[str, tuple[TierRule, ...]] = Field(default_factory=_default_tiers)
    default_tier: str = "free"
    open_request_ttl_s: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _tiers_exist(self) -> RateLimitArgs:
        if self.default_tier not in self.tiers:
            raise ValueError(f"default_tier {self.default_tier!r} is not one of tiers {sorted(self.tiers)}")
        no_rate = [name for name, rules in self.tiers.items() if not any(isinstance(r, RateRule) for r in rules)]
        if no_rate:
            raise ValueError(f"tiers {no_rate} have no rate rule ({{limit, period_s}})")
        two_caps = [
            name for name, rules in self.tiers.items() if sum(isinstance(r, ConcurrencyRule) for r in rules) > 1
        ]
        if two_caps:
            raise ValueError(f"tiers {two_caps} have more than one concurrency rule ({{concurrent}})")
        return self


class ApiKeysArgs(_Strict):
    """The one API key registry (``X-API-Key``), for authentication and rate tiers alike.

    Only SHA-256 digests are configured, never keys (``scripts/hash_api_key.py`` prints both);
    entries from the three sources are merged. See :mod:`serve_app.api_keys` for the entry format.

    Attributes:
        required: answer ``/remove`` with 401 UNAUTHORIZED unless a listed key is sent. Off for
            local use; the probes (``/health``, ``/ready``) and the handle API never need a key.
        hashes: hex SHA-256 digest → tier name, inline in the config.
        file: a file of entries, read once at deploy time (a mounted secret, for example).
        env_var: the name of an environment variable holding entries, read once at deploy time
            from the environment of the process that builds the app.
    """

    required: bool = False
    hashes: dict[str, str] = Field(default_factory=dict)
    file: str | None = None
    env_var: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    @model_validator(mode="after")
    def _digests_are_hex(self) -> ApiKeysArgs:
        bad = [digest for digest in self.hashes if len(digest) != 64 or digest.strip("0123456789abcdef")]
        if bad:
            raise ValueError(
                f"api_keys.hashes must map lowercase hex SHA-256 digests to tiers ({len(bad)} entries are not "
                "digests); hash keys with scripts/hash_api_key.py and never put a key itself in the config"
            )
        return self


class TelemetryArgs(_Strict):
    """Request statistics behind ``/health``'s ``performance_metrics``.

    Attributes:
        window_s: statistics cover this many recent seconds (spec: the last hour).
        max_samples: memory bound; the oldest samples are dropped first.
    """

    window_s: float = Field(default=3600.0, gt=0)
    max_samples: int = Field(default=100_000, ge=1)


class AppArgs(_Strict):
    """Arguments of :func:`serve_app.app.build_app`; the ``args:`` block of a Serve config."""

    model: ModelArgs = Field(default_factory=ModelArgs)
    upload: UploadArgs = Field(default_factory=UploadArgs)
    ingress: IngressArgs = Field(default_factory=IngressArgs)
    inference: InferenceArgs = Field(default_factory=InferenceArgs)
    rate_limit: RateLimitArgs = Field(default_factory=RateLimitArgs)
    api_keys: ApiKeysArgs = Field(default_factory=ApiKeysArgs)
    telemetry: TelemetryArgs = Field(default_factory=TelemetryArgs)

    @model_validator(mode="after")
    def _key_tiers_exist(self) -> AppArgs:
        unknown = {tier for tier in self.api_keys.hashes.values() if tier not in self.rate_limit.tiers}
        if unknown:
            raise ValueError(
                f"api_keys.hashes name unknown tiers {sorted(unknown)}; rate_limit.tiers are "
                f"{sorted(self.rate_limit.tiers)}"
            )
        return self

    @property
    def stale_after_s(self) -> float:
        """Age after which a silent Inference replica no longer counts (three missed reports)."""
        return 3.0 * self.inference.report_interval_s + 1.0
