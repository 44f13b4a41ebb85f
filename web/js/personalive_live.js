// PersonaLive Live widget: the browser's camera → /personalive/live → generated frames, side by side.
// Protocol: personalive_core/live/server.py. Frames go out as a 4-byte big-endian id + JPEG; generated
// frames come back as id + float32 server latency (ms) + JPEG; the id gives the end-to-end latency here.
// Also: Prepare (warm-up before the camera starts), Record (a take in output/), the output page (the
// generated frames alone, for OBS), and the node's expression / head_pose / smoothness widgets sent
// to the running stream whenever they change.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const NODE = "PersonaLiveLive";
const WARMUP_ID = 0xffffffff;
const MAX_BUFFERED = 1 << 20; // bytes not yet sent on the socket before a camera frame is skipped
const CONTROLS = ["expression", "head_pose", "smoothness"]; // node widgets that apply while live

function el(tag, props = {}, children = []) {
  const e = Object.assign(document.createElement(tag), props);
  for (const c of children) e.append(c);
  return e;
}

function socketURL() {
  const url = new URL(api.apiURL("/personalive/live"), window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.toString();
}

function outputURL(id) {
  return new URL(api.apiURL(`/personalive/view/${encodeURIComponent(id)}`), window.location.href).toString();
}

function button(text, title) {
  return el("button", { textContent: text, title, className: "pl-button" });
}

class LiveWidget {
  constructor(node) {
    this.node = node;
    this.camera = el("video", { autoplay: true, muted: true, playsInline: true, className: "pl-view" });
    this.output = el("canvas", { width: 256, height: 256, className: "pl-view" });
    this.button = el("button", { textContent: "Start", className: "pl-start" });
    this.prepareButton = button("Prepare", "Load and warm up the networks at the live size now, so the first " +
                                "live chunk is as fast as the rest (queue the workflow once first)");
    this.prepareButton.classList.add("pl-prepare");
    this.recordButton = button("● Rec", "Record the generated frames, at the pace performed, to " +
                               "output/PersonaLive/live_NNNNN_.mp4");
    this.recordButton.classList.add("pl-record");
    this.recordButton.disabled = true;
    this.openButton = button("Output ↗", "Open the generated frames alone, full size (add this URL as a " +
                             "Browser Source in OBS)");
    this.openButton.classList.add("pl-open");
    this.copyButton = button("Copy URL", "Copy the output page's URL");
    this.copyButton.classList.add("pl-copy");
    this.fps = el("input", { type: "number", min: 1, max: 60, value: 15, className: "pl-fps",
                             title: "Driving frames per second sent from the camera" });
    this.readout = el("div", { className: "pl-readout", textContent: "queue the workflow once, then Start" });
    this.note = el("div", { className: "pl-note" });
    this.root = el("div", { className: "personalive-live" }, [
      el("div", { className: "pl-views" }, [this.camera, this.output]),
      el("div", { className: "pl-controls" }, [this.button, this.prepareButton, this.recordButton, this.openButton,
                                              this.copyButton, el("label", { textContent: "fps", title: this.fps.title }),
                                              this.fps]),
      this.readout,
      this.note,
    ]);
    this.root.style.cssText = "display:flex;flex-direction:column;gap:4px;font:12px sans-serif;color:#ddd";
    for (const v of [this.camera, this.output]) v.style.cssText = "width:50%;aspect-ratio:1;object-fit:cover;background:#111";
    this.root.querySelector(".pl-views").style.cssText = "display:flex;gap:4px";
    for (const row of this.root.querySelectorAll(".pl-controls")) row.style.cssText = "display:flex;flex-wrap:wrap;gap:4px;align-items:center";
    this.note.style.cssText = "min-height:1em;word-break:break-all";
    this.fps.style.width = "4em";
    this.button.onclick = () => (this.live ? this.stop() : this.start());
    this.prepareButton.onclick = () => this.prepare();
    this.recordButton.onclick = () => this.send({ type: "record", on: !this.recording });
    this.openButton.onclick = () => window.open(outputURL(this.node.id), "_blank");
    this.copyButton.onclick = () => this.copyOutputURL();
    this.fps.onchange = () => this.live && this.schedule();
    this.sent = new Map();
    this.stats = { frames: 0, since: performance.now(), latency: null, server: null, dropped: 0 };
  }

  // -- the socket: opened for Prepare or Start, closed on Stop -----------------------------------
  connect() {
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) return this.opened;
    this.ws = new WebSocket(socketURL());
    this.ws.binaryType = "arraybuffer";
    this.ws.onmessage = (m) => this.receive(m.data);
    this.ws.onclose = () => this.closed();
    this.opened = new Promise((resolve, reject) => {
      this.ws.onopen = resolve;
      this.ws.onerror = () => reject(new Error("cannot reach the server's live socket"));
    });
    return this.opened;
  }

  send(message) {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
  }

  controls() {
    const values = {};
    for (const w of this.node.widgets || []) if (CONTROLS.includes(w.name)) values[w.name] = Number(w.value);
    return values;
  }

  controlsChanged() {
    if (this.live) this.send({ type: "controls", controls: this.controls() });
  }

  async prepare() {
    this.prepareButton.disabled = true;
    this.show("preparing…");
    try {
      await this.connect();
      this.send({ type: "prepare", target: String(this.node.id) });
    } catch (e) {
      this.show(`prepare: ${e.message}`);
      this.prepareButton.disabled = false;
    }
  }

  async start() {
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
    } catch (e) {
      this.show(`camera unavailable: ${e.message}`);
      return;
    }
    this.camera.srcObject = this.stream;
    await this.camera.play().catch(() => {});
    this.live = true;
    this.button.textContent = "Stop";
    this.show("connecting…");
    try {
      await this.connect();
    } catch (e) {
      this.show(e.message);
      this.stop();
      return;
    }
    this.send({ type: "start", target: String(this.node.id), controls: this.controls() });
  }

  stop() {
    clearInterval(this.timer);
    this.timer = null;
    this.live = false;
    this.stream?.getTracks().forEach((t) => t.stop());
    this.stream = null;
    this.button.textContent = "Start";
    this.recordButton.disabled = true;
    // the server answers a stop with the finished take (if recording), then "stopped"; then we close
    if (this.ws?.readyState === WebSocket.OPEN) this.send({ type: "stop" });
    else this.ws?.close();
  }

  closed() {
    this.ws = null;
    this.prepareButton.disabled = false;
    if (this.live) this.stop();
    this.setRecording(false);
  }

  setRecording(on) {
    this.recording = on;
    this.recordButton.textContent = on ? "■ Stop rec" : "● Rec";
    this.recordButton.style.color = on ? "#f55" : "";
  }

  async copyOutputURL() {
    const url = outputURL(this.node.id);
    try {
      await navigator.clipboard.writeText(url);
      this.note.textContent = `copied ${url}`;
    } catch {
      this.note.textContent = url; // no clipboard on plain http away from localhost: copy it from here
    }
  }

  // -- camera frames out ----------------------------------------------------------------------------
  schedule() {
    clearInterval(this.timer);
    const fps = Math.max(1, Math.min(60, Number(this.fps.value) || 15));
    this.timer = setInterval(() => this.capture(), 1000 / fps);
  }

  capture() {
    const v = this.camera;
    if (!this.live || this.ws?.readyState !== WebSocket.OPEN || !v.videoWidth) return;
    if (this.ws.bufferedAmount > MAX_BUFFERED) return; // the link is slower than the camera: skip
    const side = Math.min(v.videoWidth, v.videoHeight);
    const c = (this.grab ??= document.createElement("canvas"));
    c.width = c.height = this.size;
    c.getContext("2d").drawImage(v, (v.videoWidth - side) / 2, (v.videoHeight - side) / 2, side, side, 0, 0, this.size, this.size);
    const id = (this.nextId = ((this.nextId ?? 0) + 1) % WARMUP_ID);
    c.toBlob(async (blob) => {
      if (!blob || !this.live || this.ws?.readyState !== WebSocket.OPEN) return;
      const head = new DataView(new ArrayBuffer(4));
      head.setUint32(0, id);
      const now = performance.now();
      this.sent.set(id, now);
      for (const [old, t] of this.sent) { // forget frames the server dropped (insertion order = age)
        if (now - t < 120000) break;
        this.sent.delete(old);
      }
      this.ws.send(new Blob([head.buffer, blob]));
    }, "image/jpeg", 0.85);
  }

  // -- messages in ----------------------------------------------------------------------------------
  async receive(data) {
    if (typeof data === "string") {
      this.message(JSON.parse(data));
      return;
    }
    const view = new DataView(data);
    const id = view.getUint32(0);
    const image = await createImageBitmap(new Blob([data.slice(8)], { type: "image/jpeg" }));
    this.output.getContext("2d").drawImage(image, 0, 0, this.output.width, this.output.height);
    const now = performance.now();
    if (id !== WARMUP_ID && this.sent.has(id)) {
      this.stats.latency = now - this.sent.get(id);
      this.sent.delete(id);
    }
    this.stats.frames += 1;
    const elapsed = (now - this.stats.since) / 1000;
    if (elapsed >= 1) {
      this.stats.fps = this.stats.frames / elapsed;
      this.stats.frames = 0;
      this.stats.since = now;
    }
    this.render();
  }

  message(m) {
    if (m.type === "started") {
      this.size = m.size;
      this.output.width = this.output.height = m.size;
      this.recordButton.disabled = false;
      this.schedule();
      this.show(`live at ${m.size}×${m.size}: warming up…`);
    } else if (m.type === "stats") {
      this.stats.server = m.latency_ms_p50;
      this.stats.dropped = m.dropped;
      this.stats.state = m.state;
      this.stats.warm = m.warm_start;
      this.render(); // readouts stay current even while no frame arrives
    } else if (m.type === "progress") {
      this.show(`preparing: chunk ${m.done} of ${m.total}…`);
      this.root.dataset.prepare = `${m.done}/${m.total}`;
    } else if (m.type === "prepared") {
      this.prepareButton.disabled = false;
      this.root.dataset.prepared = "true";
      const steady = m.chunk_ms[m.chunk_ms.length - 1];
      this.show(`prepared${m.compiled ? " and compiled" : ""} in ${m.seconds.toFixed(1)} s (a chunk now takes ` +
                `${steady.toFixed(0)} ms): press Start`);
      if (!this.live) this.ws?.close();
    } else if (m.type === "recording") {
      this.setRecording(true);
      this.note.textContent = `recording ${m.file}…`;
    } else if (m.type === "recorded") {
      this.setRecording(false);
      this.showTake(m);
    } else if (m.type === "stopped") {
      this.ws?.close();
    } else if (m.type === "error") {
      if (m.code?.startsWith("prepare") || m.code === "no_reference") this.prepareButton.disabled = false;
      this.show(`error: ${m.message}`);
    }
  }

  showTake(m) {
    this.note.replaceChildren();
    if (!m.file) {
      this.note.textContent = "nothing recorded (no generated frame yet)";
      return;
    }
    const [subfolder, filename] = m.file.includes("/") ? [m.file.slice(0, m.file.lastIndexOf("/")), m.file.slice(m.file.lastIndexOf("/") + 1)] : ["", m.file];
    const href = api.apiURL(`/view?filename=${encodeURIComponent(filename)}&subfolder=${encodeURIComponent(subfolder)}&type=output`);
    this.note.append(`saved ${m.frames} frames, ${m.seconds.toFixed(1)} s: `,
                     el("a", { href, target: "_blank", textContent: `output/${m.file}`, style: "color:#8cf" }));
    Object.assign(this.root.dataset, { take: m.file, takeFrames: m.frames, takeSeconds: m.seconds });
  }

  render() {
    const s = this.stats;
    const f = (x, d = 0) => (x == null ? "–" : x.toFixed(d));
    this.show(`output ${f(s.fps, 1)} fps · latency ${f(s.latency)} ms (server ${f(s.server)} ms) · dropped ${s.dropped}` +
              (s.warm ? " · prepared" : "") + (s.state && s.state !== "running" ? ` · ${s.state}` : ""));
    this.root.dataset.fps = f(s.fps, 2);
    this.root.dataset.latency = f(s.latency);
    this.root.dataset.server = f(s.server);
  }

  show(text) {
    this.readout.textContent = text;
  }
}

app.registerExtension({
  name: "PersonaLive.Live",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE) return;
    const created = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = created?.apply(this, arguments);
      const widget = new LiveWidget(this);
      this.personaliveLive = widget;
      for (const w of this.widgets || []) {
        if (!CONTROLS.includes(w.name)) continue;
        const callback = w.callback;
        w.callback = function () {
          const out = callback?.apply(this, arguments);
          widget.controlsChanged();
          return out;
        };
      }
      this.addDOMWidget("live", "personalive_live", widget.root, { serialize: false, getMinHeight: () => 360 });
      this.setSize([Math.max(this.size[0], 480), Math.max(this.size[1], 640)]);
      const removed = this.onRemoved;
      this.onRemoved = function () {
        widget.stop();
        return removed?.apply(this, arguments);
      };
      return r;
    };
  },
});
