"""The one settings object of Vigil (environment prefix ``VIGIL_``).

Built only at entry points (``vigil serve``, ``vigil worker``, ``create_app``); every other module
receives the values it needs explicitly.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Deployment settings. Every field can be set as ``VIGIL_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="VIGIL_", extra="forbid")

    # Storage
    redis_url: str | None = Field(
        default=None,
        description="Redis URL; when unset `vigil serve` starts an embedded redis-server.",
    )
    redis_prefix: str = Field(default="vigil:", description="Prefix of every Redis key.")
    data_dir: Path = Field(
        default=Path("vigil-data"),
        description="Segments, overlays, models and the embedded Redis's files live here.",
    )

    # Auth
    bootstrap_admin_key: SecretStr | None = Field(
        default=None,
        description="For automation: becomes the first admin key instead of a generated one.",
    )

    # Ingest limits
    max_upload_bytes: int = Field(default=512 * 1024 * 1024, gt=0)
    max_json_body_bytes: int = Field(
        default=1024 * 1024, gt=0, description="Largest JSON request body (labels, keys, ...)."
    )
    max_segment_duration_s: float = Field(default=900.0, gt=0)
    max_frame_pixels: int = Field(default=3840 * 2160, gt=0)
    queue_max_length: int = Field(default=1000, gt=0)
    disk_budget_bytes: int = Field(
        default=0,
        ge=0,
        description="Most bytes of stored segment videos in total (0: no budget); uploads "
        "beyond it get 507 `insufficient_storage`. Size it below the data volume.",
    )
    stream_disk_budget_bytes: int = Field(
        default=0,
        ge=0,
        description="Most bytes of stored segment videos per stream (0: no budget); 507.",
    )
    upload_rate_per_minute: int = Field(
        default=600,
        ge=0,
        description="Uploads one API key may start per minute (fixed window; 0: no limit); "
        "more get 429 `rate_limited`.",
    )
    idempotency_pending_ttl_s: float = Field(
        default=60.0,
        gt=0,
        description="Life of an `Idempotency-Key` claim while its upload runs; renewed by the "
        "request, so a claim of a request that died lapses this long after it.",
    )
    stale_upload_age_s: float = Field(
        default=3600.0,
        gt=0,
        description="`.part` files of uploads untouched this long are removed (dead uploads).",
    )

    # Analysis
    analysis_fps: float = Field(default=2.0, gt=0)
    device: str = Field(
        default="auto", description="'auto', 'cpu' or a torch device such as 'cuda:0'."
    )
    model_path: Path | None = Field(
        default=None, description="Checkpoint to use when the registry has no active model."
    )

    # Queue behaviour
    job_visibility_timeout_s: float = Field(default=120.0, gt=0)
    job_max_attempts: int = Field(default=3, ge=1)
    job_retry_backoff_s: float = Field(default=2.0, ge=0)
    heartbeat_interval_s: float = Field(default=5.0, gt=0)
    worker_ttl_s: float = Field(default=30.0, gt=0)
    stream_lock_ttl_s: float = Field(
        default=15.0,
        gt=0,
        description="Life of a per-stream lock unless its holder's heartbeat renews it (a "
        "killed worker delays its stream at most this long); at least 3 heartbeat intervals.",
    )
    reconnect_backoff_max_s: float = Field(
        default=30.0,
        gt=0,
        description="Longest wait of a worker between two tries to reach Redis again.",
    )

    audit_retention_days: float = Field(
        default=365.0,
        gt=0,
        description="Audit entries older than this are trimmed (by time, never by count).",
    )

    # HTTP
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)


def get_settings() -> Settings:
    """Read the settings from the environment (call at entry points only)."""
    return Settings()
