"""The simulator's knobs, each with the reason for its default.

They are the topology's ``simulation:`` key (every field optional), so nothing the simulator
assumes is hidden: a drill's report.json lists them. docs/simulator.md derives the load model
from these and cites the sources; the defaults are what the calibration tests hold to. What
belongs to the estate itself (boot time, spare instances, which services are the database)
is a service or datacenter key instead.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["SimConfig"]

MIN_PERIOD_S = 0.01
"""Tickers and probes run every period: a tinier one would make a drill loop for ever."""
MAX_S = 10_000_000
"""Bounds on every knob keep the simulator's arithmetic finite (the topology is input)."""
MAX_MS = MAX_S * 1000


class SimConfig(BaseModel):
    """Everything the simulator assumes that the topology does not say."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    # --- time -------------------------------------------------------------------------------
    tick_s: float = Field(
        1.0, ge=MIN_PERIOD_S, le=MAX_S, description="Load model step; breach seconds count these."
    )
    scrape_interval_s: float = Field(
        10.0, ge=MIN_PERIOD_S, le=MAX_S, description="How often /metrics is sampled."
    )

    # --- cache (per DC) ---------------------------------------------------------------------
    zipf_alpha: float = Field(0.65, gt=0, le=10, description="Key popularity skew.")
    key_space_s: float = Field(
        1200.0, gt=0, le=MAX_S, description="Distinct keys, in seconds of full-traffic cache reads."
    )
    ttl_s: float = Field(3600.0, gt=0, le=MAX_S, description="Cache entry time to live.")
    churn_per_s: float = Field(1 / 7200, ge=0, le=1e9, description="Evictions and invalidations.")
    cache_bins: int = Field(24, ge=4, le=256, description="Popularity bins (log-spaced).")
    user_slices: int = Field(20, ge=2, le=200, description="Resolution of user placement.")

    # --- database (per DC) ------------------------------------------------------------------
    write_share_at_peak: float = Field(
        0.3, ge=0, lt=1, description="Share of the DB's warm peak load that is writes."
    )
    collapse_slope: float = Field(
        0.6, ge=0, le=1000, description="Goodput lost per unit of overload beyond capacity."
    )
    collapse_floor: float = Field(0.2, ge=0, le=1, description="Goodput never below this share.")
    naive_attempts: int = Field(
        4, ge=1, le=100, description="Attempts a client without policy makes."
    )

    # --- moving users -----------------------------------------------------------------------
    surge_seconds: float = Field(
        20.0, ge=0, le=MAX_S,
        description="DB work of one reconnect, in seconds of that user's traffic.",
    )
    reconnect_window_s: float = Field(
        120.0, gt=0, le=MAX_S, description="Over which reconnects spread."
    )

    traffic_noise: float = Field(
        0.005, ge=0, lt=0.5, description="Std. dev. of the AR(1) wobble on user traffic."
    )
    traffic_noise_memory_s: float = Field(
        60.0, gt=0, le=MAX_S, description="Wobble correlation time."
    )

    # --- latency ----------------------------------------------------------------------------
    base_p99_ms: float = Field(40.0, gt=0, le=MAX_MS)
    timeout_ms: float = Field(2000.0, gt=0, le=MAX_MS)

    # --- estate -----------------------------------------------------------------------------
    restart_jitter: float = Field(0.2, ge=0, lt=1, description="Restart takes x(1 +- jitter).")
    cached_ips_point_to: str | None = Field(
        None, min_length=1, max_length=63,
        description="The DC whose IPs the IP-caching callers hold at the start (they last "
        "resolved when the GSLB sent everything there); default: the first DC.")
    patch_s_per_instance: float = Field(2.0, ge=0, le=MAX_S)
    artifact_copy_s: float = Field(45.0, gt=0, le=MAX_S)
    health_check_interval_s: float = Field(10.0, ge=MIN_PERIOD_S, le=MAX_S)
