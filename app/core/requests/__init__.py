"""Request records: what became of an APEX request after its jobs, and their state machine.

One record per ``<cloud_id>/<resource_type>/<request_id>`` tfgen ran a (non dry-run) job
for. Three sources move it (jobs, GitLab's webhooks, the reconciler), each through a
step function, applied by ``Lifecycle`` (``app/core/lifecycle.py``) inside the store's
compare-and-set ``update``.

- ``record``: the record, its states and their ranks;
- ``steps``: the state machine, one step per source (never backwards);
- ``store``: the stores' protocol and ``request_store_from_url``;
- ``redis_store`` and ``sql_store``: the two stores.
"""

from app.core.requests.record import (
    RANK,
    RECONCILE_STATES,
    STATES,
    RequestRecord,
    Step,
    request_key,
)
from app.core.requests.redis_store import RedisRequestStore
from app.core.requests.sql_store import SqlRequestStore
from app.core.requests.steps import (
    branch_merged_step,
    job_step,
    merge_request_step,
    pipeline_step,
)
from app.core.requests.store import RequestStore, request_store_from_url

__all__ = [
    "RANK",
    "RECONCILE_STATES",
    "STATES",
    "RedisRequestStore",
    "RequestRecord",
    "RequestStore",
    "SqlRequestStore",
    "Step",
    "branch_merged_step",
    "job_step",
    "merge_request_step",
    "pipeline_step",
    "request_key",
    "request_store_from_url",
]
