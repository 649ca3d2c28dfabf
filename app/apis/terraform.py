"""The ``terraform`` namespace (``/api/v1/terraform``), shared by its two modules.

``generate`` (jobs in) and ``templates`` (the catalog) each own their routes and models;
they register on this one namespace so the URLs, the Swagger tag and the operation ids
stay as the API has always published them (two namespaces of one name would list the
tag twice).
"""

from __future__ import annotations

from flask_restx import Namespace

__all__ = ["ns"]

ns = Namespace("terraform", description="Generate Terraform from an APEX request")
