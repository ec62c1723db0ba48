"""hyperdash-otel: a live job-monitoring dashboard on OpenTelemetry and Prometheus.

>>> from hyperdash_otel import Dashboard, Config
>>> with Dashboard(Config(port=0)) as dash:   # serves from a background thread
...     dash.update_job_metrics(active=1, completed=0, failed=0, pending=2, queue_len=2)
"""

from .config import Config, default_config
from .dashboard import Dashboard
from .snapshot import SNAPSHOT_FIELDS, build_snapshot
from .stores import (
    HEALTH_STATUSES,
    JOB_STATUSES,
    SEVERITIES,
    Alert,
    AlertStore,
    JobInfo,
    JobStore,
)
from .telemetry import METER_NAME, METRICS, MetricSpec

__version__ = "0.1.0"

__all__ = [
    "Alert",
    "AlertStore",
    "Config",
    "Dashboard",
    "HEALTH_STATUSES",
    "JOB_STATUSES",
    "JobInfo",
    "JobStore",
    "METER_NAME",
    "METRICS",
    "MetricSpec",
    "SEVERITIES",
    "SNAPSHOT_FIELDS",
    "__version__",
    "build_snapshot",
    "default_config",
]
