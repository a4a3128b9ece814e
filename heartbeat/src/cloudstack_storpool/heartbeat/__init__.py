"""Storage-network heartbeat: the host loop, the management-side check and the fencing policy."""
