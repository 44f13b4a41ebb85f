#!/usr/bin/env python3
"""Render many (reference portrait, driving video) pairs through running ComfyUI servers.

    python scripts/batch_client.py --workflow workflows/api/personalive_portrait_to_video.json \\
        --server 127.0.0.1:8188 [--server gpu2:8188 ...] \\
        --reference portrait.png --driving clips/            # one portrait × every video in clips/
        [--pairs pairs.txt] [--out results/] [--set PersonaLiveStreamSampler.seed=7]

For each job the client uploads the two inputs to the server (POST /upload/image, which stores any file
in the input folder), puts their names into the workflow's LoadImage / LoadVideo nodes, submits it
(POST /prompt), follows it (GET /queue, GET /history/<id>) and downloads every file the workflow
saved (GET /view) into --out as `<reference>__<driving>[_<n>].<ext>`.

- Several --server: one worker per server, jobs spread over them as they free up.
- A server that goes away (connection refused/reset, timeout while talking to it) is set aside and
  retried after a pause; its job goes back to the queue for any server (--retries times). When no
  server has answered for --give-up seconds, the remaining jobs are reported as failed.
- Results are written as soon as a job finishes (temporary name, then renamed), and a job whose
  `<job>.json` record exists in --out is skipped, so an interrupted batch resumes where it stopped.
- A job the server rejects or that fails while executing is reported and not retried.

Stdlib only (urllib); imports nothing from ComfyUI or personalive_core. Exit status 0 when every job
succeeded (or was already done), 1 otherwise, 2 on usage errors.
"""
import argparse
import hashlib
import json
import mimetypes
import os
import queue
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".gif", ".m4v")
LOCK = threading.Lock()


def log(msg):
    with LOCK:
        print(msg, file=sys.stderr, flush=True)


class ServerGone(Exception):
    """The server did not answer: try the job elsewhere."""


class JobFailed(Exception):
    """The server answered but the job cannot succeed there or anywhere (bad input, node error)."""


# -- HTTP ----------------------------------------------------------------------------------------------
class Server:
    def __init__(self, address, timeout=60):
        address = address if "://" in address else "http://" + address
        self.url = address.rstrip("/")
        self.timeout = timeout
        self.client_id = uuid.uuid4().hex
        self.uploaded = {}  # local path → name on the server
        self.down_since = None  # time it stopped answering

    def __str__(self):
        return self.url

    def request(self, method, path, body=None, headers=None, timeout=None):
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
            raise ServerGone(f"{self.url}: {getattr(e, 'reason', e)}") from e

    def get_json(self, path):
        status, data = self.request("GET", path)
        if status != 200:
            raise ServerGone(f"{self.url}{path}: HTTP {status}")
        try:
            return json.loads(data)
        except json.JSONDecodeError as e:
            raise ServerGone(f"{self.url}{path}: not JSON ({e})") from e

    def alive(self):
        try:
            self.get_json("/system_stats")
            return True
        except ServerGone:
            return False

    def upload(self, path):
        """Upload once per server; the stored name carries a content hash, so equal names never clash."""
        if path in self.uploaded:
            return self.uploaded[path]
        with open(path, "rb") as f:
            content = f.read()
        name = f"pl_{hashlib.sha1(content).hexdigest()[:12]}_{os.path.basename(path)}"
        boundary = uuid.uuid4().hex
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        fields = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
                         for k, v in (("type", "input"), ("overwrite", "true")))
        body = (fields.encode() + f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
                f"Content-Type: {ctype}\r\n\r\n".encode() + content + f"\r\n--{boundary}--\r\n".encode())
        status, data = self.request("POST", "/upload/image", body,
                                    {"Content-Type": f"multipart/form-data; boundary={boundary}"}, timeout=600)
        if status != 200:
            raise JobFailed(f"upload of {path} to {self.url} refused: HTTP {status} {data[:300]!r}")
        reply = json.loads(data)
        stored = f"{reply['subfolder']}/{reply['name']}" if reply.get("subfolder") else reply["name"]
        self.uploaded[path] = stored
        return stored

    def submit(self, prompt):
        body = json.dumps({"prompt": prompt, "client_id": self.client_id}).encode()
        status, data = self.request("POST", "/prompt", body, {"Content-Type": "application/json"})
        try:
            reply = json.loads(data) if data else {}
        except json.JSONDecodeError:
            reply = {"raw": data[:500].decode("utf-8", "replace")}
        if status != 200 or "prompt_id" not in reply:
            if status >= 500:
                raise ServerGone(f"{self.url}/prompt: HTTP {status}")
            raise JobFailed(f"rejected by {self.url}: {json.dumps(reply)[:2000]}")
        return reply["prompt_id"]

    def wait(self, prompt_id, poll, timeout, label):
        """History entry of a finished prompt; ServerGone if the server restarted and forgot it."""
        deadline = time.time() + timeout if timeout else None
        state = None
        while True:
            entry = self.get_json(f"/history/{urllib.parse.quote(prompt_id)}").get(prompt_id)
            if entry:
                status = entry.get("status", {})
                if status.get("completed") or status.get("status_str") == "error":
                    return entry
            queued = self.get_json("/queue")
            running = any(item[1] == prompt_id for item in queued.get("queue_running", []))
            pending = any(item[1] == prompt_id for item in queued.get("queue_pending", []))
            if not (running or pending or entry):
                entry = self.get_json(f"/history/{urllib.parse.quote(prompt_id)}").get(prompt_id)
                if entry:
                    continue
                raise ServerGone(f"{self.url} no longer knows prompt {prompt_id} (restarted?)")
            now = "running" if running else "queued"
            if now != state:
                log(f"{label}: {now} on {self.url}")
                state = now
            if deadline and time.time() > deadline:
                raise JobFailed(f"{label}: not finished after {timeout} s on {self.url}")
            time.sleep(poll)

    def download(self, item, dest):
        query = urllib.parse.urlencode({"filename": item["filename"], "subfolder": item.get("subfolder", ""),
                                        "type": item.get("type", "output")})
        status, data = self.request("GET", f"/view?{query}", timeout=600)
        if status != 200:
            raise ServerGone(f"{self.url}/view {item['filename']}: HTTP {status}")
        tmp = dest + ".part"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, dest)


# -- jobs ----------------------------------------------------------------------------------------------
class Job:
    def __init__(self, reference, driving):
        self.reference, self.driving = reference, driving
        stem = lambda p: os.path.splitext(os.path.basename(p))[0]  # noqa: E731
        self.name = f"{stem(reference)}__{stem(driving)}"
        self.attempts = 0


def files_in(path, suffixes, what):
    if os.path.isdir(path):
        found = sorted(os.path.join(path, f) for f in os.listdir(path) if f.lower().endswith(suffixes))
        if not found:
            raise SystemExit(f"error: no {what} ({', '.join(suffixes)}) in folder {path}")
        return found
    if not os.path.isfile(path):
        raise SystemExit(f"error: {what} not found: {path}")
    return [path]


def read_pairs(path):
    base = os.path.dirname(os.path.abspath(path))
    pairs = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = [p.strip() for p in (line.split("\t") if "\t" in line else line.split(","))]
            if len(parts) != 2:
                raise SystemExit(f"error: {path}:{n}: expected 'reference,driving' (comma or tab separated)")
            ref, drv = (p if os.path.isabs(p) else os.path.join(base, p) for p in parts)
            for p in (ref, drv):
                if not os.path.isfile(p):
                    raise SystemExit(f"error: {path}:{n}: file not found: {p}")
            pairs.append((ref, drv))
    return pairs


def find_node(prompt, class_type, wanted):
    if wanted:
        if wanted not in prompt:
            raise SystemExit(f"error: the workflow has no node {wanted!r}")
        return wanted
    ids = [k for k, v in prompt.items() if v.get("class_type") == class_type]
    if len(ids) != 1:
        raise SystemExit(f"error: the workflow has {len(ids)} {class_type} nodes; name the one to fill with "
                         f"--{'reference' if class_type == 'LoadImage' else 'driving'}-node ID")
    return ids[0]


def apply_sets(prompt, sets):
    """NODE.INPUT=JSON where NODE is a node id or a class_type (all nodes of that type)."""
    for item in sets:
        target, _, value = item.partition("=")
        node, _, name = target.rpartition(".")
        if not node or not name or not _:
            raise SystemExit(f"error: --set {item!r}: expected NODE.INPUT=VALUE")
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass  # a bare string
        ids = [node] if node in prompt else [k for k, v in prompt.items() if v.get("class_type") == node]
        if not ids:
            raise SystemExit(f"error: --set {item!r}: no node with id or class_type {node!r}")
        for k in ids:
            prompt[k]["inputs"][name] = value


def saved_items(entry):
    items = []
    for node_id in sorted(entry.get("outputs", {}), key=str):
        out = entry["outputs"][node_id]
        for key in ("images", "gifs", "videos", "audio"):
            for item in out.get(key, []) or []:
                if isinstance(item, dict) and item.get("filename") and item.get("type", "output") == "output":
                    items.append(item)
    return items


def error_text(entry):
    for kind, data in entry.get("status", {}).get("messages", []):
        if kind == "execution_error":
            return f"{data.get('node_type')} (node {data.get('node_id')}): {data.get('exception_message', '').strip()}"
        if kind == "execution_interrupted":
            return "interrupted on the server"
    return "failed without a message"


class Batch:
    def __init__(self, args, template, jobs, servers):
        self.args, self.template, self.servers = args, template, servers
        self.todo = queue.Queue()
        for job in jobs:
            self.todo.put(job)
        self.open = len(jobs)
        self.done, self.failed = [], []
        self.cond = threading.Condition()
        self.ref_node = find_node(template, "LoadImage", args.reference_node)
        self.drv_node = find_node(template, "LoadVideo", args.driving_node)

    def record(self, job):
        return os.path.join(self.args.out, job.name + ".json")

    def finish(self, job, ok, info):
        with self.cond:
            (self.done if ok else self.failed).append((job, info))
            self.open -= 1
            self.cond.notify_all()

    def run_job(self, server, job):
        prompt = json.loads(json.dumps(self.template))
        prompt[self.ref_node]["inputs"]["image"] = server.upload(job.reference)
        drv_input = "file" if prompt[self.drv_node]["class_type"] == "LoadVideo" else "video"
        prompt[self.drv_node]["inputs"][drv_input] = server.upload(job.driving)
        for node in prompt.values():  # results named after the job on the server too
            if "filename_prefix" in node.get("inputs", {}) and isinstance(node["inputs"]["filename_prefix"], str):
                node["inputs"]["filename_prefix"] = f"PersonaLive/batch/{job.name}"
        started = time.time()
        prompt_id = server.submit(prompt)
        log(f"{job.name}: submitted to {server} as {prompt_id}")
        entry = server.wait(prompt_id, self.args.poll, self.args.timeout, job.name)
        if entry.get("status", {}).get("status_str") == "error":
            raise JobFailed(error_text(entry))
        items = saved_items(entry)
        if not items:
            raise JobFailed(f"the workflow saved no files (outputs: {json.dumps(entry.get('outputs'))[:500]})")
        files = []
        for i, item in enumerate(items):
            ext = os.path.splitext(item["filename"])[1]
            dest = os.path.join(self.args.out, job.name + (f"_{i}" if len(items) > 1 else "") + ext)
            server.download(item, dest)
            files.append(dest)
        info = {"reference": job.reference, "driving": job.driving, "server": server.url, "prompt_id": prompt_id,
                "files": files, "seconds": round(time.time() - started, 1)}
        tmp = self.record(job) + ".part"
        with open(tmp, "w") as f:
            json.dump(info, f, indent=1)
        os.replace(tmp, self.record(job))  # the record comes last: it marks the job as done
        return info

    def worker(self, server):
        pause = self.args.pause
        while not self.over():
            if server.down_since is not None:
                if self.all_down_for() > self.args.give_up:
                    self.give_up()
                    return
                with self.cond:
                    self.cond.wait(pause)
                if self.over():
                    return
                if not server.alive():
                    pause = min(pause * 2, 60)
                    continue
                log(f"{server}: answering again")
                server.down_since, pause = None, self.args.pause
            try:
                job = self.todo.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                info = self.run_job(server, job)
                log(f"{job.name}: done on {server} in {info['seconds']} s -> {', '.join(info['files'])}")
                self.finish(job, True, info)
            except JobFailed as e:
                log(f"{job.name}: FAILED: {e}")
                self.finish(job, False, str(e))
            except ServerGone as e:
                server.down_since = time.time()
                server.uploaded.clear()  # a restarted server may have lost its input folder
                job.attempts += 1
                if job.attempts > self.args.retries:
                    log(f"{job.name}: FAILED after {job.attempts} attempts: {e}")
                    self.finish(job, False, f"server gone: {e}")
                else:
                    log(f"{job.name}: server unreachable ({e}); job back in the queue "
                        f"(attempt {job.attempts}/{self.args.retries})")
                    self.todo.put(job)

    def over(self):
        with self.cond:
            return self.open == 0

    def all_down_for(self):
        """Seconds since the last server went down, while all are down (0 while one is up)."""
        downs = [s.down_since for s in self.servers]
        return 0 if None in downs else time.time() - max(downs)

    def give_up(self):
        log(f"no server has answered for {self.args.give_up:.0f} s; giving up on the remaining jobs "
            "(run the same command again to resume)")
        while True:
            try:
                job = self.todo.get_nowait()
            except queue.Empty:
                return
            self.finish(job, False, "no server answered")

    def run(self):
        threads = [threading.Thread(target=self.worker, args=(s,), daemon=True) for s in self.servers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--workflow", required=True, help="API-format workflow (ComfyUI 'Export (API)'), e.g. "
                                                     "workflows/api/personalive_portrait_to_video.json")
    p.add_argument("--server", action="append", required=True, help="host:port or URL; repeat for several servers")
    p.add_argument("--reference", help="reference image, or a folder of images")
    p.add_argument("--driving", help="driving video, or a folder of videos (jobs: every reference × every video)")
    p.add_argument("--pairs", help="text file, one 'reference,driving' pair per line (paths relative to the file)")
    p.add_argument("--out", default="results", help="folder for the results (default: results)")
    p.add_argument("--set", action="append", default=[], metavar="NODE.INPUT=JSON",
                   help="override a workflow input; NODE is a node id or a class_type, e.g. PersonaLiveStreamSampler.seed=7")
    p.add_argument("--reference-node", help="node id to receive the reference (default: the only LoadImage)")
    p.add_argument("--driving-node", help="node id to receive the driving video (default: the only LoadVideo)")
    p.add_argument("--retries", type=int, default=3, help="attempts per job after its server went away (default 3)")
    p.add_argument("--timeout", type=float, default=0, help="seconds a job may take once submitted (0: no limit)")
    p.add_argument("--poll", type=float, default=1.0, help="seconds between status requests (default 1)")
    p.add_argument("--pause", type=float, default=5.0, help="first wait before re-trying an unreachable server")
    p.add_argument("--give-up", type=float, default=600, help="stop when no server has answered for this many "
                                                              "seconds (default 600); finished results are kept")
    a = p.parse_args(argv)
    if not a.pairs and not (a.reference and a.driving):
        p.error("give --reference and --driving, or --pairs")
    return a


def main(argv=None):
    a = parse(argv)
    with open(a.workflow, encoding="utf-8") as f:
        template = json.load(f)
    if isinstance(template, dict) and isinstance(template.get("prompt"), dict):
        template = template["prompt"]
    if not isinstance(template, dict) or "nodes" in template or not all(
            isinstance(v, dict) and "class_type" in v for v in template.values()):
        raise SystemExit(f"error: {a.workflow} is not an API-format workflow; in ComfyUI use Workflow → Export (API), "
                         "or take the copy in workflows/api/")
    apply_sets(template, a.set)
    pairs = read_pairs(a.pairs) if a.pairs else []
    if a.reference and a.driving:
        pairs += [(r, d) for r in files_in(a.reference, IMAGE_SUFFIXES, "reference image")
                  for d in files_in(a.driving, VIDEO_SUFFIXES, "driving video")]
    os.makedirs(a.out, exist_ok=True)
    jobs, names = [], set()
    for ref, drv in pairs:
        job = Job(os.path.abspath(ref), os.path.abspath(drv))
        if job.name in names:
            raise SystemExit(f"error: two jobs would both be named {job.name!r}; rename one of the inputs")
        names.add(job.name)
        if os.path.isfile(os.path.join(a.out, job.name + ".json")):
            log(f"{job.name}: skipped, result already in {a.out}")
            continue
        jobs.append(job)
    servers = [Server(s) for s in a.server]
    batch = Batch(a, template, jobs, servers)
    if jobs:
        for server in servers:
            if not server.alive():
                server.down_since = time.time()
                log(f"{server}: not answering (GET /system_stats); will retry it")
        if all(s.down_since for s in servers):
            raise SystemExit(f"error: no server answers: {', '.join(map(str, servers))}. Is ComfyUI running there?")
        log(f"{len(jobs)} job(s) on {len(servers)} server(s)")
        batch.run()
    summary = {"done": [info for _, info in batch.done], "failed": {job.name: info for job, info in batch.failed},
               "skipped": len(pairs) - len(jobs)}
    print(json.dumps(summary, indent=1))
    return 1 if batch.failed else 0


if __name__ == "__main__":
    sys.exit(main())
