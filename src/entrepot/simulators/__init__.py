"""Stand-ins for the outside systems entrepot talks to, for tests and benchmarks."""
