"""Tryton 8.2 as an ERP: a seeded template database, a local server and, on top,
the JSON-RPC client and the spoke."""
