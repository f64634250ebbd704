"""NetSuite-style ERP simulator: REST record web services backed by SQLite.

It accepts customers and sales orders on the URLs of NetSuite's REST record API,
responds in its wire format and enforces its concurrency governance. An admin API
under /_sim injects faults and shows what the simulator stored and received.
"""

from entrepot.simulators.erp.app import create_app
from entrepot.simulators.erp.server import serve
from entrepot.simulators.erp.settings import ErpSimSettings

__all__ = ["ErpSimSettings", "create_app", "serve"]
