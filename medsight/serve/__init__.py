"""medsight's HTTP side: one FastAPI app (``create_app``) with routers per resource.

Every route declares who may call it (``deps.requires(permission)``) or that it is public
(``deps.public``); ``app.check_route_access`` refuses to build an app with a route that does neither.
"""

from medsight.serve.app import create_app
from medsight.serve.settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]
