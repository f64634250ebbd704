"""Shopify: webhook verification and the mapping of REST orders to canonical."""
