"""scripts/batch_client.py against fake ComfyUI servers (stdlib HTTP, no ComfyUI needed).

The real-server run is in tests/test_comfy_host.py::test_batch_client."""
import importlib.util
import json
import os
import re
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKFLOW = os.path.join(REPO, "workflows", "api", "personalive_portrait_to_video.json")


def load_client():
    spec = importlib.util.spec_from_file_location("batch_client", os.path.join(REPO, "scripts", "batch_client.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


client = load_client()


class FakeComfy:
    """Just enough of ComfyUI's HTTP API: /system_stats, /upload/image, /prompt, /queue, /history, /view.
    A prompt finishes after `polls` history requests. `die_after_prompt`: the server stops right after
    accepting a prompt. `reject`: /prompt answers 400 with node errors. `error`: the run fails."""

    def __init__(self, die_after_prompt=False, reject=False, error=False, polls=2):
        self.uploads, self.prompts, self.polls_left = {}, {}, {}
        self.die_after_prompt, self.reject, self.error, self.polls = die_after_prompt, reject, error, polls
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, obj, status=200, raw=None):
                body = raw if raw is not None else json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                url = urlparse(self.path)
                if url.path == "/system_stats":
                    return self.reply({"system": {}})
                if url.path == "/queue":
                    running = [[0, pid, {}, {}, []] for pid in fake.prompts if fake.polls_left.get(pid, 0) > 0]
                    return self.reply({"queue_running": running, "queue_pending": []})
                if url.path.startswith("/history/"):
                    pid = url.path.rsplit("/", 1)[1]
                    if pid not in fake.prompts:
                        return self.reply({})
                    if fake.polls_left[pid] > 0:
                        fake.polls_left[pid] -= 1
                        return self.reply({})
                    if fake.error:
                        status = {"status_str": "error", "completed": False, "messages": [
                            ["execution_error", {"node_id": "9", "node_type": "PersonaLiveStreamSampler",
                                                 "exception_message": "out of memory"}]]}
                        return self.reply({pid: {"status": status, "outputs": {}}})
                    item = {"filename": f"{pid}.mp4", "subfolder": "PersonaLive/batch", "type": "output"}
                    return self.reply({pid: {"status": {"status_str": "success", "completed": True, "messages": []},
                                             "outputs": {"11": {"images": [item], "animated": [True]}}}})
                if url.path == "/view":
                    pid = parse_qs(url.query)["filename"][0][:-4]
                    prompt = fake.prompts[pid]
                    return self.reply(None, raw=f"{prompt['1']['inputs']['image']}|{prompt['2']['inputs']['file']}".encode())
                self.reply({}, 404)

            def do_POST(self):
                data = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path == "/upload/image":
                    name = re.search(rb'filename="([^"]+)"', data).group(1).decode()
                    fake.uploads[name] = data
                    return self.reply({"name": name, "subfolder": "", "type": "input"})
                if self.path == "/prompt":
                    prompt = json.loads(data)["prompt"]
                    if fake.reject:
                        return self.reply({"error": {"message": "Prompt outputs failed validation"},
                                           "node_errors": {"4": {"errors": [{"message": "Value not in list"}]}}}, 400)
                    for nid, key in (("1", "image"), ("2", "file")):
                        assert prompt[nid]["inputs"][key] in fake.uploads
                    pid = uuid.uuid4().hex
                    fake.prompts[pid], fake.polls_left[pid] = prompt, fake.polls
                    self.reply({"prompt_id": pid, "number": len(fake.prompts), "node_errors": {}})
                    if fake.die_after_prompt:
                        threading.Thread(target=fake.stop).start()
                    return
                self.reply({}, 404)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def inputs(tmp_path):
    ref = tmp_path / "in" / "anna.png"
    ref.parent.mkdir()
    ref.write_bytes(b"png")
    clips = tmp_path / "in" / "clips"
    clips.mkdir()
    for name in ("talk", "nod", "smile"):
        (clips / f"{name}.mp4").write_bytes(name.encode())
    return ref, clips, tmp_path / "out"


def run(argv, capsys):
    code = client.main(["--workflow", WORKFLOW, "--poll", "0.05", "--pause", "0.2", *argv])
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


def test_jobs_spread_over_servers_and_resume(inputs, capsys):
    ref, clips, out = inputs
    a, b = FakeComfy(), FakeComfy()
    try:
        code, summary, err = run(["--server", a.url, "--server", b.url, "--reference", str(ref),
                                  "--driving", str(clips), "--out", str(out), "--set", "PersonaLiveStreamSampler.seed=7"],
                                 capsys)
        assert code == 0 and not summary["failed"], err
        names = sorted(os.path.basename(f) for d in summary["done"] for f in d["files"])
        assert names == ["anna__nod.mp4", "anna__smile.mp4", "anna__talk.mp4"]
        assert {d["server"] for d in summary["done"]} == {a.url, b.url}
        for name in ("nod", "smile", "talk"):
            content = (out / f"anna__{name}.mp4").read_text()
            assert content.endswith(f"_{name}.mp4") and "anna.png" in content  # its own inputs
            assert json.loads((out / f"anna__{name}.json").read_text())["driving"].endswith(f"{name}.mp4")
        prompts = list(a.prompts.values()) + list(b.prompts.values())
        assert all(p["9"]["inputs"]["seed"] == 7 for p in prompts)
        assert all(p["11"]["inputs"]["filename_prefix"].startswith("PersonaLive/batch/anna__") for p in prompts)
        code, summary, err = run(["--server", a.url, "--reference", str(ref), "--driving", str(clips),
                                  "--out", str(out)], capsys)
        assert code == 0 and summary["skipped"] == 3 and not summary["done"] and "skipped" in err
        assert len(a.prompts) + len(b.prompts) == 3  # nothing was submitted again
    finally:
        a.stop()
        b.stop()


def test_job_of_a_vanished_server_is_retried_elsewhere(inputs, capsys):
    ref, clips, out = inputs
    dying, healthy = FakeComfy(die_after_prompt=True, polls=50), FakeComfy()
    try:
        code, summary, err = run(["--server", dying.url, "--server", healthy.url, "--reference", str(ref),
                                  "--driving", str(clips), "--out", str(out)], capsys)
        assert code == 0 and len(summary["done"]) == 3, err
        assert {d["server"] for d in summary["done"]} == {healthy.url}
        assert len(dying.prompts) == 1 and "back in the queue" in err
    finally:
        healthy.stop()


def test_rejected_and_failed_jobs_are_reported_not_retried(inputs, capsys):
    ref, clips, out = inputs
    for fake, expected in ((FakeComfy(reject=True), "Value not in list"), (FakeComfy(error=True), "out of memory")):
        try:
            code, summary, err = run(["--server", fake.url, "--reference", str(ref), "--driving",
                                      str(clips / "nod.mp4"), "--out", str(out)], capsys)
            assert code == 1 and expected in summary["failed"]["anna__nod"], err
            assert len(fake.prompts) <= 1 and not os.path.exists(out / "anna__nod.json")
        finally:
            fake.stop()


def test_pairs_file_and_no_server(inputs, tmp_path, capsys):
    ref, clips, out = inputs
    pairs = tmp_path / "in" / "pairs.txt"
    pairs.write_text("# reference, driving\nanna.png, clips/talk.mp4\nanna.png\tclips/nod.mp4\n")
    fake = FakeComfy()
    try:
        code, summary, err = run(["--server", fake.url, "--pairs", str(pairs), "--out", str(out)], capsys)
        assert code == 0 and sorted(os.path.basename(d["driving"]) for d in summary["done"]) == ["nod.mp4", "talk.mp4"]
    finally:
        fake.stop()
    with pytest.raises(SystemExit, match="no server answers"):
        client.main(["--workflow", WORKFLOW, "--server", fake.url, "--pairs", str(pairs), "--out", str(tmp_path / "o2")])
    with pytest.raises(SystemExit, match="not an API-format workflow"):
        client.main(["--workflow", os.path.join(REPO, "workflows", "PersonaLive - Portrait to video.json"),
                     "--server", fake.url, "--pairs", str(pairs)])
