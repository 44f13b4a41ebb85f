"""The live page without ComfyUI (`python -m personalive_core live`): one aiohttp app serving the same widget
as the ComfyUI node (web/js/personalive_live_widget.js, on a page of its own), the same websocket protocol
and routes under /personalive/ (server.py), and the recorded takes.

Reachability: the loopback address by default. Any other address needs a token (`check_address`), passed as
`?token=` in the page's URL, which the page hands on to every request and socket it opens (browsers and OBS
cannot set websocket headers); every route refuses a request without it (401). Off loopback a browser grants
the camera only to a secure page, hence `tls`: HTTPS with a certificate and key.
"""

import hmac
import ipaddress
import os
import ssl

from aiohttp import web

from ..errors import InputError
from .server import MAX_MESSAGE, add_live_routes

TARGET = "live"  # the one target a standalone server animates
PREFIX = "/personalive"
WEB = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "web", "js")
WIDGET = "personalive_live_widget.js"

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>PersonaLive live</title>
<style>html,body{{margin:0;background:#1b1b1f;color:#ddd;font:13px sans-serif}}
main{{max-width:980px;margin:0 auto;padding:12px}} h1{{font-size:16px;font-weight:600;margin:0 0 8px}}
.personalive-live .pl-views{{height:360px!important}} button,select,input{{font:inherit}}</style></head>
<body><main><h1>PersonaLive live</h1></main>
<script type="module">
// The widget of ComfyUI's PersonaLive Live node, on its own page; every URL carries this page's ?token=.
const token = new URLSearchParams(location.search).get("token");
const withToken = (path) => {{
  const url = new URL(path, location.href);
  if (token) url.searchParams.set("token", token);
  return url.toString();
}};
const {{ LiveWidget }} = await import(withToken("{prefix}/web/{widget}"));
const widget = new LiveWidget({{
  target: () => {target},
  url: withToken,
  takeURL: (file) => withToken(`{prefix}/takes/${{file}}`),
  values: () => null, // no node: the widget shows its own controls, built from {prefix}/protocol
  idle: "press Start and allow the camera; drop or paste a portrait here to animate another one",
}});
document.querySelector("main").append(widget.root);
window.personaliveLive = widget;
</script></body></html>
"""


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or "localhost") is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_address(host: str, token: str | None, cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """InputError unless the address, token and TLS files go together; the TLS context (None: plain HTTP)."""
    if not is_loopback(host) and not token:
        raise InputError(
            f"--host {host} is reachable from other machines: pass --token SECRET as well (the page "
            "and its sockets then carry ?token=SECRET; every request without it is refused)"
        )
    if bool(cert) != bool(key):
        raise InputError("HTTPS needs both --tls-cert (the certificate, PEM) and --tls-key (its private key, PEM)")
    if not cert:
        return None
    for flag, path in (("--tls-cert", cert), ("--tls-key", key)):
        if not os.path.isfile(path):
            raise InputError(f"{flag} {path}: no such file")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as e:
        raise InputError(f"--tls-cert {cert} / --tls-key {key}: not a certificate and its key ({e})") from None
    return context


def token_guard(token: str):
    """aiohttp middleware: a request whose ?token= is not `token` gets a 401 saying what is missing."""
    expected = token.encode()

    @web.middleware
    async def guard(request, handler):
        if not hmac.compare_digest(request.query.get("token", "").encode(), expected):
            given = "a wrong" if "token" in request.query else "no"
            return web.Response(
                status=401,
                text=f"401: {given} token. This PersonaLive server was started with "
                "--token: open its page as http(s)://HOST:PORT/?token=<that token>.\n",
            )
        return await handler(request)

    return guard


def make_app(engine, takes=None, token: str | None = None, max_message: int = MAX_MESSAGE) -> web.Application:
    """The app: the page at /, the widget script, the live routes of `engine` (its target named TARGET), the
    takes of `takes` (a TakeFolder, or None: no recording) at {PREFIX}/takes/; all behind `token` if given."""
    if not os.path.isfile(os.path.join(WEB, WIDGET)):
        raise InputError(
            f"the live widget {os.path.join(WEB, WIDGET)} is missing: run the server from a checkout "
            "of the repository (personalive_core/ next to web/)"
        )
    app = web.Application(middlewares=[token_guard(token)] if token else [])
    html = PAGE.format(prefix=PREFIX, widget=WIDGET, target=repr(TARGET))

    async def index(request):
        return web.Response(text=html, content_type="text/html", headers={"Cache-Control": "no-store"})

    async def script(request):
        name = request.match_info["name"]
        if name != os.path.basename(name) or not name.endswith(".js") or not os.path.isfile(os.path.join(WEB, name)):
            raise web.HTTPNotFound(text=f"no script {name!r}")
        return web.FileResponse(os.path.join(WEB, name), headers={"Content-Type": "text/javascript"})

    async def take(request):
        folder = os.path.realpath(takes.folder)
        path = os.path.realpath(os.path.join(folder, request.match_info["path"]))
        if not path.startswith(folder + os.sep) or not os.path.isfile(path):
            raise web.HTTPNotFound(text="no such take")
        return web.FileResponse(path)

    app.router.add_get("/", index)
    app.router.add_get(f"{PREFIX}/web/{{name}}", script)
    if takes is not None:
        app.router.add_get(f"{PREFIX}/takes/{{path:.+}}", take)
    add_live_routes(app.router, engine, PREFIX, max_message, takes)

    async def stop_engine(app):
        engine.shutdown()

    app.on_cleanup.append(stop_engine)
    return app


def page_url(host: str, port: int, token: str | None, tls: bool) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{shown}:{port}/" + (f"?token={token}" if token else "")


def serve(app: web.Application, host: str, port: int, tls: ssl.SSLContext | None, token: str | None, log) -> None:
    """Serve `app` until Ctrl-C (or SIGTERM); InputError when the port cannot be bound."""
    url = page_url(host, port, token, tls is not None)
    try:  # aiohttp prints once every socket is bound: then the page can be opened
        web.run_app(app, host=host, port=port, ssl_context=tls, print=lambda _: log(f"PersonaLive live page: {url}"))
    except OSError as e:
        raise InputError(f"cannot serve on {host}:{port}: {e.strerror or e}; pick another --port or --host") from None
    log("stopped")
