"""The demo: signed Shopify webhooks into a hub that posts to the ERP simulator."""
