"""The standalone live server (`python -m personalive_core live`), started for real on 127.0.0.1: the address,
token and TLS checks before anything loads; then over HTTPS with a token: every route refuses a request without
it (401), the page and the widget script are served with it, and the live socket streams the camera at its own
size, records a take (served back) and swaps a portrait. The same page in a browser: test_live_host.py."""

import asyncio
import json
import os
import signal
import ssl
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request

import aiohttp
import cv2
import numpy as np
import pytest

from test_live import CAMERA_H, CAMERA_W, camera_frame, face_path, face_portrait
from test_live_server import png

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = "s3cret-token"
READY = "PersonaLive live page: "


def live_command(weights, reference, *args):
    return [
        sys.executable,
        "-m",
        "personalive_core",
        "live",
        "--weights",
        weights,
        "--reference",
        reference,
        "--size",
        "64",
        *args,
    ]


@pytest.fixture(scope="module")
def portrait(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("portrait") / "portrait.png")
    cv2.imwrite(path, cv2.cvtColor(face_portrait(), cv2.COLOR_RGB2BGR))
    return path


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Standalone:
    """`python -m personalive_core live …` in a subprocess, until it prints its page's URL."""

    def __init__(self, command, env=None):
        self.proc = subprocess.Popen(
            command,
            cwd=REPO,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        )
        self.lines = []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                raise AssertionError(f"the server exited ({self.proc.wait()}): {''.join(self.lines)}")
            self.lines.append(line)
            if line.startswith(READY):
                self.url = line[len(READY) :].strip()
                return
        self.stop()
        raise AssertionError(f"the server never said it was ready: {''.join(self.lines)}")

    def stop(self):
        """Ctrl-C, as a user stops it; the exit code and the rest of its log."""
        self.proc.send_signal(signal.SIGINT)
        try:
            rest = self.proc.communicate(timeout=60)[1]
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rest = self.proc.communicate()[1]
        return self.proc.returncode, "".join(self.lines) + rest


def test_other_addresses_need_a_token_and_tls_both_files(tiny_weights, portrait):
    """Checked before anything loads: a clear message and exit code 2."""
    for args, words in (
        (["--host", "0.0.0.0"], "pass --token SECRET"),
        (["--token", "x", "--tls-cert", portrait], "both --tls-cert"),
        (["--token", "x", "--tls-cert", portrait, "--tls-key", portrait], "not a certificate"),
    ):
        run = subprocess.run(
            live_command(tiny_weights, portrait, *args), cwd=REPO, capture_output=True, text=True, timeout=120
        )
        assert run.returncode == 2 and words in run.stderr and "loading weights" not in run.stderr, run.stderr


def self_signed(folder):
    """A certificate for 127.0.0.1 and its key, made by openssl (nothing fetched)."""
    cert, key = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            key,
            "-out",
            cert,
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def fetch(url, context):
    try:
        with urllib.request.urlopen(url, context=context, timeout=30) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read()


async def live_session(base, context, frames):
    """Over the live socket with the token: a stream of whole camera frames, a take, a portrait swapped in."""
    async with aiohttp.ClientSession() as http:
        try:
            await http.ws_connect(base.replace("https", "wss") + "personalive/live", ssl=context)
            refused = None
        except aiohttp.WSServerHandshakeError as e:
            refused = e.status
        url = base.replace("https", "wss") + f"personalive/live?token={TOKEN}"
        async with http.ws_connect(url, ssl=context) as ws:
            await ws.send_json({"type": "start", "target": "live"})
            started, images, replies = None, [], {}
            sent = 0
            while len(images) < 20 or "reference_set" not in replies or "recorded" not in replies:
                if started and sent < len(images) + 4 and sent < 40:
                    for _ in range(4):
                        jpeg = cv2.imencode(".jpg", frames[sent % 16])[1].tobytes()
                        await ws.send_bytes(struct.pack(">I", sent) + jpeg)
                        sent += 1
                msg = await asyncio.wait_for(ws.receive(), 120)
                if msg.type == aiohttp.WSMsgType.BINARY:
                    images.append(cv2.imdecode(np.frombuffer(msg.data[8:], np.uint8), cv2.IMREAD_COLOR))
                    if len(images) == 12:  # warm-up done: record, and swap the portrait meanwhile
                        await ws.send_json({"type": "record", "on": True})
                        await ws.send_json({"type": "reference"})
                        await ws.send_bytes(png(face_portrait(seed=11)))
                    if len(images) == 20 and "recorded" not in replies:
                        await ws.send_json({"type": "record", "on": False})
                    continue
                assert msg.type == aiohttp.WSMsgType.TEXT, msg
                reply = json.loads(msg.data)
                assert reply["type"] != "error", reply
                replies[reply["type"]] = reply
                started = started or reply["type"] == "started"
    return refused, images, replies


def test_the_standalone_server_over_https_with_a_token(tiny_weights, portrait, tmp_path):
    cert, key = self_signed(str(tmp_path))
    port = free_port()
    server = Standalone(
        live_command(
            tiny_weights,
            portrait,
            "--port",
            str(port),
            "--token",
            TOKEN,
            "--tls-cert",
            cert,
            "--tls-key",
            key,
            "--takes",
            str(tmp_path / "takes"),
            "--paste-into",
            "driving",
        )
    )
    context = ssl.create_default_context(cafile=cert)
    base = f"https://127.0.0.1:{port}/"
    frames = [cv2.cvtColor(camera_frame(face_path(i, 16), seed=i), cv2.COLOR_RGB2BGR) for i in range(16)]
    try:
        assert server.url == f"{base}?token={TOKEN}"
        refusals = {
            path: fetch(base + path, context)
            for path in (
                "",
                "personalive/status",
                "personalive/protocol",
                "personalive/view/live",
                "personalive/web/personalive_live_widget.js",
                f"personalive/status?token=not-{TOKEN}",
            )
        }
        page = fetch(server.url, context)
        script = fetch(f"{base}personalive/web/personalive_live_widget.js?token={TOKEN}", context)
        refused, images, replies = asyncio.run(live_session(base, context, frames))
        take = fetch(f"{base}personalive/takes/{replies['recorded']['file']}?token={TOKEN}", context)
    finally:
        code, log = server.stop()
    for path, (status, _, body) in refusals.items():
        assert status == 401 and b"token" in body, (path, status, body)
    assert b"a wrong token" in refusals[f"personalive/status?token=not-{TOKEN}"][2]
    assert page[0] == 200 and b"personalive_live_widget.js" in page[2]
    assert script[0] == 200 and "javascript" in script[1] and b"export class LiveWidget" in script[2]
    assert refused == 401
    assert replies["started"]["can_record"] is True and replies["started"]["controls"]["paste_into"] == "driving"
    assert all(image.shape == (CAMERA_H, CAMERA_W, 3) for image in images)  # pasted into the whole camera frame
    assert replies["reference_set"]["portrait"] == 1
    assert replies["recorded"]["frames"] > 0 and replies["recorded"]["file"].startswith("live_")
    assert take[0] == 200 and take[2][4:8] == b"ftyp"
    assert code == 0 and "stopped" in log, log
