"""The driver service behind other HTTP servers, for `bench_http` only: a WSGI application (for
granian) and an ASGI application (for uvicorn) over the service's own handler, route table,
operation table, jobs, error mapping and driver context, so that the servers differ by their
HTTP layer alone. Also the project's own server with its tuning knobs (workers, the
interpreter's switch interval), built the way `cloudstack-storpool serve` builds it.

Each application checks the token (the service's own constant-time check) before it reads one
byte of the body, caps the body at the service's limit, and answers every refusal it makes in
JSON. What the servers themselves refuse (bad framing, oversized heads) they answer their own
way: that is part of what the comparison is about, not hidden here.

    granian --interface wsgi --factory benchmarks.http_adapters:wsgi_app
    uvicorn --factory benchmarks.http_adapters:asgi_app
    python -m benchmarks.http_adapters project --listen 127.0.0.1:PORT [--workers N] [--switch-interval S]

Configuration comes from the environment `serve` reads ($CSSP_POOLS_FILE, CloudStack's
`CLOUDSTACK_*`, the agent token and CA, the settings file) and $BENCH_SERVICE_TOKEN_FILE;
$BENCH_ASGI_THREADS sizes the ASGI application's pool for the blocking driver calls.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

from cloudstack_storpool.httpjson import MAX_BODY, Headers, JsonHandler
from cloudstack_storpool.service.app import ServiceServer, _Handler

TOKEN_FILE_ENV = "BENCH_SERVICE_TOKEN_FILE"
ASGI_THREADS_ENV = "BENCH_ASGI_THREADS"


def build_service(host: str = "127.0.0.1", port: int = 0, workers: int | None = None) -> ServiceServer:
    """The service as `cloudstack-storpool serve --settings-ttl 30` builds it (periodic tasks
    included). For the adapters its own listening socket stays unused."""
    from cloudstack_storpool.agentapi.link import read_agent_token
    from cloudstack_storpool.daemon import setup_logging
    from cloudstack_storpool.driver.context import DriverContext
    from cloudstack_storpool.poolconfig import POOLS_FILE_ENV
    from cloudstack_storpool.service.app import make_server
    from cloudstack_storpool.service_cli import read_service_token
    from cloudstack_storpool.settings.localfile import SETTINGS_FILE_ENV

    setup_logging(False, "text")
    token = read_service_token(os.environ[TOKEN_FILE_ENV])
    agent_token = read_agent_token(None)
    pools_path = os.environ[POOLS_FILE_ENV]
    ctx = DriverContext.from_config(pools_path, agent_token, settings_ttl=30,
                                    settings_file=os.environ.get(SETTINGS_FILE_ENV))
    return make_server(ctx, token, host, port, pools_file=pools_path, periodic_gc=True, secrets=(agent_token,),
                       workers=workers)


class _Exchange(_Handler):
    """One request through the service's own handler (`_Handler.handle`: routes, parsing with
    msgspec, the driver call, errors), with the body handed in and the reply kept, not written."""

    def __init__(self, server: ServiceServer, method: str, target: str, fields: dict[str, str], peer: str) -> None:
        # No connection of the project's: the other server owns it; only its address is logged.
        conn: Any = SimpleNamespace(addr=(peer, 0))
        JsonHandler.__init__(self, conn, server)
        self.command = method
        self.path = target
        self.requestline = f"{method} {target} HTTP/1.1"
        self.headers = Headers(fields)
        self.close_connection = False
        self.body: bytes | None = None
        self.reply: tuple[int, bytes, dict[str, str], str] = (500, b"", {}, "application/json")

    def _read_body(self) -> bytes | None:
        return self.body

    def send_bytes(self, status: int, data: bytes, headers: dict[str, str] | None = None, *,
                   content_type: str = "application/json") -> None:
        self.log_request(status)
        self.reply = (status, data, dict(headers or {}), content_type)

    def too_large(self) -> None:
        self.close_connection = True
        self._error(413, "too-large", f"the body must be at most {MAX_BODY} bytes", "body")

    def head(self) -> list[tuple[str, str]]:
        status, data, headers, content_type = self.reply
        out = [*headers.items()]
        if status != 204:
            out += [("Content-Type", content_type), ("Content-Length", str(len(data)))]
        if self.close_connection:
            out.append(("Connection", "close"))
        return out


def _phrase(status: int) -> str:
    from http import HTTPStatus

    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Unknown"


def _declared_length(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def wsgi_app() -> Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]:
    """(A factory: granian calls it in each worker process.)"""
    service = build_service()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        fields = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        if environ.get("CONTENT_LENGTH"):
            fields["content-length"] = environ["CONTENT_LENGTH"]
        query = environ.get("QUERY_STRING", "")
        target = environ.get("PATH_INFO", "/") + (f"?{query}" if query else "")
        ex = _Exchange(service, environ["REQUEST_METHOD"], target, fields, environ.get("REMOTE_ADDR", "-"))
        n = _admit(service, ex, fields)
        if n is not None:
            if n:
                ex.body = environ["wsgi.input"].read(n)
            ex.handle()
        start_response(_phrase(ex.reply[0]), ex.head())
        return [ex.reply[1]]

    return app


def _admit(service: ServiceServer, ex: _Exchange, fields: dict[str, str]) -> int | None:
    """The token, then the declared length, before a byte of the body is read (the project's
    server's order): None when the exchange was answered here, else the declared length (0 when
    none was declared)."""
    if not service.authorized(fields.get("authorization")):
        ex.unauthorized()
        return None
    ex._authed = True
    n = _declared_length(fields.get("content-length"))
    if n is not None and n > MAX_BODY:
        ex.too_large()
        return None
    return n or 0


Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def asgi_app() -> Callable[[dict[str, Any], Receive, Send], Awaitable[None]]:
    """(A factory: uvicorn calls it in each worker process.) The driver's calls block, so each
    request crosses from the event loop to a thread of a bounded pool and back."""
    service = build_service()
    pool = ThreadPoolExecutor(int(os.environ.get(ASGI_THREADS_ENV, "32")), thread_name_prefix="asgi-call")

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        fields: dict[str, str] = {}
        for k, v in scope["headers"]:
            fields.setdefault(k.decode("latin-1").lower(), v.decode("latin-1"))
        query = scope.get("query_string", b"").decode("latin-1")
        raw = scope.get("raw_path") or scope["path"].encode()
        target = raw.decode("latin-1") + (f"?{query}" if query else "")
        ex = _Exchange(service, scope["method"], target, fields, (scope.get("client") or ("-",))[0])
        if _admit(service, ex, fields) is not None:
            body = bytearray()
            more = True
            while more and len(body) <= MAX_BODY:
                msg = await receive()
                body += msg.get("body", b"")
                more = msg.get("more_body", False)
            if len(body) > MAX_BODY:
                ex.too_large()
            else:
                ex.body = bytes(body) if body else None
                await asyncio.get_running_loop().run_in_executor(pool, ex.handle)
        status, data = ex.reply[0], ex.reply[1]
        await send({"type": "http.response.start", "status": status,
                    "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in ex.head()]})
        await send({"type": "http.response.body", "body": data if status != 204 else b""})

    return app


def _msgspec_json() -> None:
    """(A knob tried, not the product's.) JSON in and out through msgspec's C codec."""
    import msgspec

    from cloudstack_storpool.errors import ValidationError

    encode = msgspec.json.Encoder().encode
    decode = msgspec.json.Decoder().decode

    def send(self: JsonHandler, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self.send_bytes(status, encode(body), headers)

    def body(self: _Handler) -> Any:
        raw = self._read_body()
        if raw is None or not raw.strip():
            return None
        try:
            return decode(raw)
        except msgspec.DecodeError:
            raise ValidationError("body", "not valid JSON") from None

    JsonHandler._send = send  # type: ignore[method-assign]
    _Handler._body = body  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> None:
    """The project's own server with the knobs `bench_http` tunes."""
    from cloudstack_storpool.daemon import serve_until_stopped
    from cloudstack_storpool.httpjson import parse_listen

    parser = argparse.ArgumentParser(prog="python -m benchmarks.http_adapters")
    parser.add_argument("server", choices=["project"])
    parser.add_argument("--listen", required=True)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--switch-interval", type=float, default=None)
    parser.add_argument("--gc-threshold", type=int, default=None,
                        help="freeze what start-up built and collect the youngest generation every N allocations")
    parser.add_argument("--msgspec-json", action="store_true",
                        help="encode replies (and decode request bodies) with msgspec instead of the json module")
    args = parser.parse_args(argv)
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    if args.msgspec_json:
        _msgspec_json()
    host, port = parse_listen(args.listen)
    server = build_service(host, port, args.workers)
    if args.gc_threshold is not None:
        import gc

        gc.collect()
        gc.freeze()
        gc.set_threshold(args.gc_threshold, 50, 100)
    try:
        serve_until_stopped(server, f"driver service listening on {server.url}")
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
