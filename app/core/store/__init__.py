"""The APEX store: read-only access to the APEX schema through SQLAlchemy Core.

- ``engine``: settings, engine and pool, driver errors translated at the boundary;
- ``values``: the identifier rule, driver values as plain Python, the rules' order;
- ``apex``: the queries (catalog, request row with its template and rules, user tokens);
- ``schema``: the shapes of those tables and views, created for development and tests
  (``init-db``; imported on its own, never by the queries).
"""

from app.core.store.apex import ApexStore
from app.core.store.engine import StoreSettings, create_engine
from app.core.store.values import IDENTIFIER, is_identifier, plain_value

__all__ = [
    "IDENTIFIER", "ApexStore", "StoreSettings", "create_engine", "is_identifier", "plain_value",
]
