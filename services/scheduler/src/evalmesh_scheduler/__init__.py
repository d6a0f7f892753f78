"""evalmesh scheduler: the control plane between the gateway, storage and the executor pool."""
