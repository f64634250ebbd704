"""Business events: the envelope, the transactional outbox, the relay, the buses and
their idempotent subscribers."""
