"""The demo: request types, rows, users and templates for a development APEX schema.

``manage.py init-db --demo`` and the tests load them; production never imports this
package (APEX owns its schema and data). The shapes themselves (``tf_template``,
``users``, request tables and views) are in ``app.core.store.schema``.

- ``templates``: the Jinja templates of ``tf_template``;
- ``data``: the request types with their columns and rows, the users, and the loaders.
"""

from app.demo.data import DEMO_USERS, RESOURCE_TYPES, create_demo_database, load_demo
from app.demo.templates import (
    AZURE_STORAGE_TEMPLATE,
    AZURE_VM_TEMPLATE,
    EC2_TEMPLATE,
    RDS_TEMPLATE,
)

__all__ = ["AZURE_STORAGE_TEMPLATE", "AZURE_VM_TEMPLATE", "DEMO_USERS", "EC2_TEMPLATE",
           "RDS_TEMPLATE", "RESOURCE_TYPES", "create_demo_database", "load_demo"]
