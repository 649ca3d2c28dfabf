"""``GET /api/v1/terraform/templates``: the catalog of accepted (cloud, type) pairs.

Its routes and the ``CatalogEntry`` model live here; the namespace object is shared
with ``generate`` (``app/apis/terraform.py``), so the URL and the Swagger tag stay.
"""

from __future__ import annotations

from typing import Any

from flask_restx import Resource, fields

from app.apis.common import services
from app.apis.terraform import ns
from app.auth import current_principal

catalog_entry = ns.model("CatalogEntry", {
    "cloud_id": fields.String(required=True, example="aws"),
    "resource_type": fields.String(required=True, example="rds"),
    "module_versions": fields.List(fields.String, example=["1.1.0", "1.2.0"]),
})


@ns.route("/templates")
class Templates(Resource):
    """The template catalog."""

    @ns.response(200, "Every (cloud_id, resource_type) pair with its module versions",
                 [catalog_entry])
    def get(self) -> list[dict[str, Any]]:
        """List the (cloud_id, resource_type) pairs the API accepts."""
        current_principal()
        return [
            {"cloud_id": cloud_id, "resource_type": resource_type, "module_versions": versions}
            for (cloud_id, resource_type), versions in sorted(services().store.catalog().items())
        ]
