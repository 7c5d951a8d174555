"""Check: size, latency and accuracy budgets for CI."""
