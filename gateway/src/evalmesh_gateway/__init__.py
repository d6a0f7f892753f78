"""evalmesh gateway: the only public entry point, serving the evalmesh.v1 API."""
