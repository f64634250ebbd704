"""HTTP: channel webhooks and the operations API."""
