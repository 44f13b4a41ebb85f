// PersonaLive Live widget: the browser's camera → /personalive/live → generated frames, side by side.
// Protocol: personalive_core/live_server.py. Frames go out as a 4-byte big-endian id + JPEG; generated
// frames come back as id + float32 server latency (ms) + JPEG; the id gives the end-to-end latency here.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const NODE = "PersonaLiveLive";
const WARMUP_ID = 0xffffffff;
const MAX_BUFFERED = 1 << 20; // bytes not yet sent on the socket before a camera frame is skipped

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

class LiveWidget {
  constructor(node) {
    this.node = node;
    this.camera = el("video", { autoplay: true, muted: true, playsInline: true, className: "pl-view" });
    this.output = el("canvas", { width: 256, height: 256, className: "pl-view" });
    this.button = el("button", { textContent: "Start", className: "pl-start" });
    this.fps = el("input", { type: "number", min: 1, max: 60, value: 15, className: "pl-fps",
                             title: "Driving frames per second sent from the camera" });
    this.readout = el("div", { className: "pl-readout", textContent: "queue the workflow once, then Start" });
    this.root = el("div", { className: "personalive-live" }, [
      el("div", { className: "pl-views" }, [this.camera, this.output]),
      el("div", { className: "pl-controls" }, [this.button, el("label", { textContent: "driving fps " }), this.fps]),
      this.readout,
    ]);
    this.root.style.cssText = "display:flex;flex-direction:column;gap:4px;font:12px sans-serif;color:#ddd";
    for (const v of [this.camera, this.output]) v.style.cssText = "width:50%;aspect-ratio:1;object-fit:cover;background:#111";
    this.root.querySelector(".pl-views").style.cssText = "display:flex;gap:4px";
    this.fps.style.width = "4em";
    this.button.onclick = () => (this.ws ? this.stop() : this.start());
    this.fps.onchange = () => this.ws && this.schedule();
    this.sent = new Map();
    this.stats = { frames: 0, since: performance.now(), latency: null, server: null, dropped: 0 };
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
    this.ws = new WebSocket(socketURL());
    this.ws.binaryType = "arraybuffer";
    this.ws.onopen = () => this.ws.send(JSON.stringify({ type: "start", target: String(this.node.id) }));
    this.ws.onmessage = (m) => this.receive(m.data);
    this.ws.onclose = () => this.stop(false);
    this.button.textContent = "Stop";
    this.show("connecting…");
  }

  stop(closeSocket = true) {
    clearInterval(this.timer);
    this.timer = null;
    if (closeSocket && this.ws) this.ws.close();
    this.ws = null;
    this.stream?.getTracks().forEach((t) => t.stop());
    this.stream = null;
    this.button.textContent = "Start";
  }

  schedule() {
    clearInterval(this.timer);
    const fps = Math.max(1, Math.min(60, Number(this.fps.value) || 15));
    this.timer = setInterval(() => this.capture(), 1000 / fps);
  }

  capture() {
    const v = this.camera;
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN || !v.videoWidth) return;
    if (this.ws.bufferedAmount > MAX_BUFFERED) return; // the link is slower than the camera: skip
    const side = Math.min(v.videoWidth, v.videoHeight);
    const c = (this.grab ??= document.createElement("canvas"));
    c.width = c.height = this.size;
    c.getContext("2d").drawImage(v, (v.videoWidth - side) / 2, (v.videoHeight - side) / 2, side, side, 0, 0, this.size, this.size);
    const id = (this.nextId = ((this.nextId ?? 0) + 1) % WARMUP_ID);
    c.toBlob(async (blob) => {
      if (!blob || !this.ws || this.ws.readyState !== WebSocket.OPEN) return;
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

  async receive(data) {
    if (typeof data === "string") {
      const m = JSON.parse(data);
      if (m.type === "started") {
        this.size = m.size;
        this.output.width = this.output.height = m.size;
        this.schedule();
        this.show(`live at ${m.size}×${m.size}: warming up…`);
      } else if (m.type === "stats") {
        this.stats.server = m.latency_ms_p50;
        this.stats.dropped = m.dropped;
        this.stats.state = m.state;
      } else if (m.type === "error") {
        this.show(`error: ${m.message}`);
      }
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

  render() {
    const s = this.stats;
    const f = (x, d = 0) => (x == null ? "–" : x.toFixed(d));
    this.show(`output ${f(s.fps, 1)} fps · latency ${f(s.latency)} ms (server ${f(s.server)} ms) · dropped ${s.dropped}` +
              (s.state && s.state !== "running" ? ` · ${s.state}` : ""));
    this.root.dataset.fps = f(s.fps, 2);
    this.root.dataset.latency = f(s.latency);
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
      this.addDOMWidget("live", "personalive_live", widget.root, { serialize: false, getMinHeight: () => 300 });
      this.setSize([Math.max(this.size[0], 480), Math.max(this.size[1], 470)]);
      const removed = this.onRemoved;
      this.onRemoved = function () {
        widget.stop();
        return removed?.apply(this, arguments);
      };
      return r;
    };
  },
});
