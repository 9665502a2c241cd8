"""``monitor serve [--store DSN] [--host 127.0.0.1] [--port 8080]`` — the inspectors' read-only pages
and JSON API over the store (see ``monitor.inspect.web``). Requires ``MONITOR_UI_TOKEN`` as a bearer
token (or the ``/login`` session) when it is set."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from monitor.commands.inspect import add_store_arguments, open_from_args


def register(sub: Any) -> None:
    p = sub.add_parser("serve", help="serve the inspectors' case-file pages and JSON API (read-only)")
    add_store_arguments(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 = any free port)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from monitor.inspect import InspectSettings
    from monitor.inspect.web import InspectorApp, ResponseCache, make_server

    opened = open_from_args(args, "monitor serve")
    if opened is None:
        return 2
    store, pack = opened
    settings = InspectSettings()
    app = InspectorApp(store, pack, token=settings.ui_token, as_of=args.as_of,
                       session_hours=settings.ui_session_hours, cookie_secure=settings.ui_cookie_secure,
                       cache=ResponseCache(ttl_s=settings.ui_cache_seconds))
    server = make_server(app, args.host, args.port)
    host, port = str(server.server_address[0]), int(server.server_address[1])
    access = "bearer token required" if app.token else "no token configured (MONITOR_UI_TOKEN unset)"
    print(f"monitor serve: http://{host}:{port}/ ({access}); Ctrl-C stops", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    print("monitor serve: stopped", file=sys.stderr)
    return 0
