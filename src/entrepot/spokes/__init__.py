"""One package per external system, and the protocols a spoke implements."""
