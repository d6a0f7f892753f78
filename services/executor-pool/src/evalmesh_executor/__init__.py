"""evalmesh executor pool: pulls evaluations and runs them in sandboxes."""
