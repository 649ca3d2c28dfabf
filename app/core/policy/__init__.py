"""Policies before the merge request: Rego rules over the request and its rendered HCL.

- ``report``: findings, the files evaluated, and ``result.policy`` with its MR and
  commit-trailer renderings;
- ``document``: the input document (``policy_input``), HCL as JSON (``hcl_document``);
- ``engine``: the Rego folder compiled with ``regopy`` and evaluated (``PolicyEngine``);
- ``testing``: the ``*_test.json`` cases beside the policies (``policy test``);
- ``check``: the job's ``policy`` stage, waivers and extra scanners (``PolicyCheck``).

The input document (``policy_input``)::

    {"request": {<row columns>, "cloud_id", "resource_type", "request_id", "sg_rules"},
     "files": {"<path>": <HCL as JSON, every block a list of bodies>},
     "template": {"ref", "sha256"}, "owner": "alice"}
"""

from app.core.policy.check import FindingSource, PendingScan, PolicyCheck, WaiverLookup
from app.core.policy.document import hcl_document, policy_input
from app.core.policy.engine import PolicyEngine
from app.core.policy.report import Finding, PolicyReport, PolicySource
from app.core.policy.testing import TestOutcome

__all__ = [
    "Finding",
    "FindingSource",
    "PendingScan",
    "PolicyCheck",
    "PolicyEngine",
    "PolicyReport",
    "PolicySource",
    "TestOutcome",
    "WaiverLookup",
    "hcl_document",
    "policy_input",
]
