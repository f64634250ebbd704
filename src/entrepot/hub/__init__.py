"""The hub: order lifecycle, routing and the flow from receipt to delivery."""
