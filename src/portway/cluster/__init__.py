"""Many processes and hosts as one server: the shared Redis and NATS, this
process's name, events to every process (token revocations), and the
``--workers`` supervisor."""

from portway.cluster.config import ClusterConfigError, check_settings
from portway.cluster.connect import ClusterUnavailable
from portway.cluster.core import Cluster, LocalCluster, SharedCluster, open_cluster, probe

__all__ = [
    "Cluster",
    "ClusterConfigError",
    "ClusterUnavailable",
    "LocalCluster",
    "SharedCluster",
    "check_settings",
    "open_cluster",
    "probe",
]
