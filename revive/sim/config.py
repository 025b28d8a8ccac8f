"""The simulator's constants, each with the reason for its value.

docs/simulator.md derives the load model from these and cites the sources. Every field can
be overridden per scenario; the defaults are what the calibration tests hold to.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from revive.ops.models import RetryPolicy

__all__ = ["RetryPolicy", "SimConfig"]


class SimConfig(BaseModel):
    """Everything the simulator assumes that the topology does not say."""

    model_config = ConfigDict(frozen=True)

    # --- time -------------------------------------------------------------------------------
    tick_s: float = Field(1.0, gt=0, description="Load model step; breach seconds count these.")
    scrape_interval_s: float = Field(10.0, gt=0, description="How often /metrics is sampled.")

    # --- cache (per DC) ---------------------------------------------------------------------
    zipf_alpha: float = Field(0.65, gt=0, description="Key popularity skew.")
    key_space_s: float = Field(
        1200.0, gt=0, description="Distinct keys, in seconds of full-traffic cache reads."
    )
    ttl_s: float = Field(3600.0, gt=0, description="Cache entry time to live.")
    churn_per_s: float = Field(1 / 7200, ge=0, description="Evictions and invalidations.")
    cache_bins: int = Field(24, ge=4, le=256, description="Popularity bins (log-spaced).")
    user_slices: int = Field(20, ge=2, le=200, description="Resolution of user placement.")

    # --- database (per DC) ------------------------------------------------------------------
    write_share_at_peak: float = Field(
        0.3, ge=0, lt=1, description="Share of the DB's warm peak load that is writes."
    )
    collapse_slope: float = Field(
        0.6, ge=0, description="Goodput lost per unit of overload beyond capacity."
    )
    collapse_floor: float = Field(0.2, ge=0, le=1, description="Goodput never below this share.")
    naive_attempts: int = Field(4, ge=1, description="Attempts a client without policy makes.")

    # --- moving users -----------------------------------------------------------------------
    surge_seconds: float = Field(
        20.0, ge=0, description="DB work of one reconnect, in seconds of that user's traffic."
    )
    reconnect_window_s: float = Field(120.0, gt=0, description="Over which reconnects spread.")

    traffic_noise: float = Field(
        0.005, ge=0, lt=0.5, description="Std. dev. of the AR(1) wobble on user traffic."
    )
    traffic_noise_memory_s: float = Field(60.0, gt=0, description="Wobble correlation time.")
    database_services: tuple[str, ...] | None = Field(
        None,
        description="Services that form the DB bottleneck (default: storage-group *db*).",
    )

    # --- latency ----------------------------------------------------------------------------
    base_p99_ms: float = Field(40.0, gt=0)
    timeout_ms: float = Field(2000.0, gt=0)

    # --- estate -----------------------------------------------------------------------------
    restart_jitter: float = Field(0.2, ge=0, lt=1, description="Restart takes x(1 +- jitter).")
    boot_s: float = Field(90.0, gt=0, description="New instance: provision to healthy.")
    patch_s_per_instance: float = Field(2.0, ge=0)
    artifact_copy_s: float = Field(45.0, gt=0)
    default_quota: int = Field(400, ge=0, description="Spare instances the compute API grants.")
    health_check_interval_s: float = Field(10.0, gt=0)
