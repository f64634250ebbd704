"""Store-and-forward delivery: per-target queues, budgets, retries and dead letters."""
