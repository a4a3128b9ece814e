"""The driver service: every driver operation over an authenticated HTTP JSON API.

`make_server(ctx, token)` serves an already-built DriverContext (tests, the local stack);
`cloudstack-storpool serve` (service_cli.py) builds one from configuration. See docs/service.md.
"""

from cloudstack_storpool.service.app import ServiceServer, make_server, serve_in_thread

__all__ = ["ServiceServer", "make_server", "serve_in_thread"]
