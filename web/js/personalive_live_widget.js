// PersonaLive live widget, shared by ComfyUI's "PersonaLive Live" node (personalive_live.js) and the standalone
// page of `python -m personalive_core live` (personalive_core/live/standalone.py): the browser's camera (the
// whole picture, up to 1280×720) → /personalive/live → generated frames beside it; Start, Prepare, Rec, the
// output page, portraits dropped, pasted or picked, the live options and a latency readout. It imports nothing:
// the page that embeds it hands it a `host`:
//   target()        the live target's name (the node id, or the standalone server's one target)
//   url(path)       the absolute http(s) URL of a server path such as "/personalive/live" (a token included)
//   takeURL(file)   where a recorded take (a path relative to the takes folder) can be opened
//   values(names)   the current live options, or null: the widget then shows its own controls, built from
//                   GET /personalive/protocol (ComfyUI: the node's own widgets; see controlsChanged)
//   idle            the readout before Start
// Protocol: personalive_core/live/server.py. Frames go out as a 4-byte big-endian id + JPEG; generated frames
// come back as id + float32 server latency (ms) + JPEG; the id gives the end-to-end latency here.
export const WARMUP_ID = 0xffffffff;
const MAX_BUFFERED = 1 << 20; // bytes not yet sent on the socket before a camera frame is skipped
const LATENCY_SAMPLES = 32; // end-to-end measurements the readout's median is taken over
const BAR_COLOURS = { wait: "#c93", window: "#59c", encode: "#9c5", transport: "#999" };

export function el(tag, props = {}, children = []) {
  const e = Object.assign(document.createElement(tag), props);
  for (const c of children) e.append(c);
  return e;
}

function button(text, title, className) {
  return el("button", { textContent: text, title, className: `pl-button ${className}` });
}

function median(values) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

function socketURL(http) {
  const url = new URL(http);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.toString();
}

export class LiveWidget {
  constructor(host) {
    this.host = host;
    this.camera = el("video", { autoplay: true, muted: true, playsInline: true, className: "pl-camera" });
    this.cropBox = el("div", { className: "pl-crop", title: "the square the model sees" });
    this.output = el("canvas", { width: 256, height: 256, className: "pl-output" });
    this.button = button("Start", "Start the camera and stream it", "pl-start");
    this.prepareButton = button("Prepare", "Load and warm up the networks at the live size now, so the first " +
                                "live chunk is as fast as the rest", "pl-prepare");
    this.recordButton = button("● Rec", "Record the generated frames, at the pace performed", "pl-record");
    this.recordButton.disabled = true;
    this.openButton = button("Output ↗", "Open the generated frames alone, full size (add this URL as a " +
                             "Browser Source in OBS)", "pl-open");
    this.copyButton = button("Copy URL", "Copy the output page's URL", "pl-copy");
    this.chooseButton = button("Portrait…", "Animate another portrait (or drop / paste a picture onto this " +
                               "widget): it is encoded while the stream goes on", "pl-choose");
    this.file = el("input", { type: "file", accept: "image/*", className: "pl-file" });
    this.file.style.display = "none";
    this.fps = el("input", { type: "number", min: 1, max: 60, value: 15, className: "pl-fps",
                             title: "Camera frames per second sent to the server" });
    this.portraits = el("div", { className: "pl-portraits" });
    this.options = el("div", { className: "pl-options" });
    this.readout = el("div", { className: "pl-readout", textContent: host.idle });
    this.latency = el("div", { className: "pl-latency" });
    this.bar = el("div", { className: "pl-bar" });
    this.note = el("div", { className: "pl-note" });
    this.root = el("div", { className: "personalive-live", tabIndex: 0 }, [
      el("div", { className: "pl-views" }, [el("div", { className: "pl-camera-box" }, [this.camera, this.cropBox]),
                                            this.output]),
      el("div", { className: "pl-row" }, [this.button, this.prepareButton, this.recordButton, this.openButton,
                                          this.copyButton, el("label", { textContent: "fps", title: this.fps.title }),
                                          this.fps]),
      el("div", { className: "pl-row" }, [this.chooseButton, this.file, this.portraits]),
      this.options, this.readout, this.latency, this.bar, this.note,
    ]);
    this.style();
    this.button.onclick = () => (this.live ? this.stop() : this.start());
    this.prepareButton.onclick = () => this.prepare();
    this.recordButton.onclick = () => this.send({ type: "record", on: !this.recording });
    this.openButton.onclick = () => window.open(this.outputURL(), "_blank");
    this.copyButton.onclick = () => this.copyOutputURL();
    this.chooseButton.onclick = () => this.file.click();
    this.file.onchange = () => this.file.files[0] && this.swap(this.file.files[0]);
    this.fps.onchange = () => this.live && this.schedule();
    this.root.addEventListener("dragover", (e) => this.dragOver(e));
    this.root.addEventListener("drop", (e) => this.dropped(e));
    this.root.addEventListener("paste", (e) => this.pasted(e));
    this.touched = new Set();
    this.sent = new Map();
    this.e2e = [];
    this.transport = [];
    this.stats = { frames: 0, since: performance.now(), dropped: 0 };
    this.protocol = fetch(host.url("/personalive/protocol")).then((r) => r.json());
    this.protocol.then((p) => this.buildOptions(p)).catch((e) => this.show(`protocol: ${e.message}`));
  }

  style() {
    this.root.style.cssText = "display:flex;flex-direction:column;gap:4px;font:12px sans-serif;color:#ddd;outline:none";
    this.root.querySelector(".pl-views").style.cssText = "display:flex;gap:4px;height:180px";
    const box = this.root.querySelector(".pl-camera-box");
    box.style.cssText = "position:relative;flex:1;min-width:0;background:#111;display:flex;justify-content:center";
    this.camera.style.cssText = "height:100%;max-width:100%;object-fit:contain;background:#111";
    this.cropBox.style.cssText = "position:absolute;border:2px solid #fc3;box-sizing:border-box;display:none;" +
                                 "pointer-events:none";
    this.output.style.cssText = "flex:1;min-width:0;height:100%;object-fit:contain;background:#111";
    for (const row of this.root.querySelectorAll(".pl-row, .pl-options, .pl-portraits")) {
      row.style.cssText = "display:flex;flex-wrap:wrap;gap:4px;align-items:center";
    }
    this.bar.style.cssText = "display:flex;height:6px;background:#222";
    this.note.style.cssText = "min-height:1em;word-break:break-all";
    this.fps.style.width = "4em";
  }

  // -- live options: the host's (the node's widgets) or our own, built from the protocol ------------
  buildOptions(protocol) {
    this.keys = [...Object.keys(protocol.controls), ...Object.keys(protocol.framing)];
    this.limits = protocol.limits;
    if (this.host.values(this.keys) !== null) return;
    for (const [name, spec] of Object.entries({ ...protocol.controls, ...protocol.framing })) {
      const input = spec.choices
        ? el("select", {}, spec.choices.map((c) => el("option", { value: c, textContent: c })))
        : el("input", { type: "number", min: spec.min, max: spec.max, step: spec.step ?? "any" });
      Object.assign(input, { value: spec.default, title: spec.help, name, className: `pl-option pl-${name}` });
      if (!spec.choices) input.style.width = "4.5em";
      input.onchange = () => {
        this.touched.add(name);
        this.controlsChanged();
      };
      this.options.append(el("label", { textContent: name, title: spec.help }, [input]));
    }
  }

  controls() {
    const own = this.host.values(this.keys || []);
    if (own !== null) return own;
    // our own controls: only what was changed here; the rest stays as the server's target has it
    const values = {};
    for (const input of this.options.querySelectorAll(".pl-option")) {
      if (!this.touched.has(input.name)) continue;
      values[input.name] = input.tagName === "SELECT" ? input.value : Number(input.value);
    }
    return values;
  }

  showOptions(values) {
    for (const input of this.options.querySelectorAll(".pl-option")) {
      if (input.name in values) input.value = values[input.name];
    }
  }

  controlsChanged() {
    if (this.live) this.send({ type: "controls", controls: this.controls() });
  }

  // -- the socket: opened for Prepare, a portrait or Start, closed on Stop ----------------------------
  connect() {
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) return this.opened;
    this.ws = new WebSocket(socketURL(this.host.url("/personalive/live")));
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

  idleClose() {
    if (!this.live && !this.busy) this.ws?.close();
  }

  async prepare() {
    this.prepareButton.disabled = true;
    this.show("preparing…");
    try {
      await this.connect();
      this.send({ type: "prepare", target: this.host.target() });
    } catch (e) {
      this.show(`prepare: ${e.message}`);
      this.prepareButton.disabled = false;
    }
  }

  async start() {
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({
        video: { width: { ideal: 1280 }, height: { ideal: 720 } }, audio: false });
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
      await this.protocol;
    } catch (e) {
      this.show(e.message);
      this.stop();
      return;
    }
    this.send({ type: "start", target: this.host.target(), controls: this.controls() });
  }

  stop() {
    clearInterval(this.timer);
    this.timer = null;
    this.live = false;
    this.stream?.getTracks().forEach((t) => t.stop());
    this.stream = null;
    this.button.textContent = "Start";
    this.recordButton.disabled = true;
    this.cropBox.style.display = "none";
    // the server answers a stop with the finished take (if recording), then "stopped"; then we close
    if (this.ws?.readyState === WebSocket.OPEN) this.send({ type: "stop" });
    else this.ws?.close();
  }

  closed() {
    this.ws = null;
    this.busy = false;
    this.prepareButton.disabled = false;
    if (this.live) this.stop();
    this.setRecording(false);
  }

  setRecording(on) {
    this.recording = on;
    this.recordButton.textContent = on ? "■ Stop rec" : "● Rec";
    this.recordButton.style.color = on ? "#f55" : "";
  }

  outputURL() {
    return this.host.url(`/personalive/view/${encodeURIComponent(this.host.target())}`);
  }

  async copyOutputURL() {
    const url = this.outputURL();
    try {
      await navigator.clipboard.writeText(url);
      this.note.textContent = `copied ${url}`;
    } catch {
      this.note.textContent = url; // no clipboard on plain http away from localhost: copy it from here
    }
  }

  // -- portraits: dropped, pasted, chosen or picked; encoded by the server while the stream goes on ----
  dragOver(e) {
    if (![...(e.dataTransfer?.types || [])].includes("Files")) return;
    e.preventDefault();
    e.stopPropagation(); // not the host's drop handling (ComfyUI would load the picture as a workflow)
    e.dataTransfer.dropEffect = "copy";
  }

  dropped(e) {
    const file = [...(e.dataTransfer?.files || [])].find((f) => f.type.startsWith("image/"));
    if (!file) return;
    e.preventDefault();
    e.stopPropagation();
    this.swap(file);
  }

  pasted(e) {
    const item = [...(e.clipboardData?.items || [])].find((i) => i.type.startsWith("image/"));
    if (!item) return;
    e.preventDefault();
    e.stopPropagation();
    this.swap(item.getAsFile());
  }

  async swap(blob) {
    this.root.dataset.reference = "encoding";
    this.show(`encoding the new portrait (${Math.round(blob.size / 1024)} KiB)…`);
    try {
      const bytes = await blob.arrayBuffer();
      await this.connect();
      this.busy = true;
      // one task: no camera frame can slip between the announcement and the picture
      this.ws.send(JSON.stringify({ type: "reference", target: this.host.target() }));
      this.ws.send(bytes);
    } catch (e) {
      this.root.dataset.reference = "error";
      this.show(`portrait: ${e.message}`);
    }
  }

  async pick(id) {
    this.root.dataset.reference = "encoding";
    await this.connect();
    this.busy = true;
    this.send({ type: "reference", target: this.host.target(), portrait: id });
  }

  async refreshPortraits() {
    try {
      const r = await fetch(this.host.url(`/personalive/portraits/${encodeURIComponent(this.host.target())}`));
      if (r.ok) this.showPortraits((await r.json()).portraits);
    } catch {
      // no server yet (a node not queued): the row stays empty
    }
  }

  showPortraits(list) {
    this.portraits.replaceChildren(...list.map((p) => {
      const image = el("img", { src: p.thumbnail, title: p.id === 0 ? "the queued portrait" : `portrait ${p.id}`,
                                className: "pl-portrait" });
      image.style.cssText = `width:40px;height:40px;cursor:pointer;border:2px solid ${p.current ? "#fc3" : "#333"}`;
      image.onclick = () => this.pick(p.id);
      return image;
    }));
    this.root.dataset.portraits = String(list.length);
  }

  // -- camera frames out: the whole picture, at most 1280×720 ------------------------------------------
  schedule() {
    clearInterval(this.timer);
    const fps = Math.max(1, Math.min(60, Number(this.fps.value) || 15));
    this.timer = setInterval(() => this.capture(), 1000 / fps);
  }

  capture() {
    const v = this.camera;
    if (!this.live || this.ws?.readyState !== WebSocket.OPEN || !v.videoWidth) return;
    if (this.ws.bufferedAmount > MAX_BUFFERED) return; // the link is slower than the camera: skip
    const [long, short] = this.limits?.camera || [1280, 720];
    const w = v.videoWidth, h = v.videoHeight;
    const k = Math.min(1, long / Math.max(w, h), short / Math.min(w, h));
    const c = (this.grab ??= document.createElement("canvas"));
    c.width = Math.round(w * k);
    c.height = Math.round(h * k);
    const id = (this.nextId = ((this.nextId ?? 0) + 1) % WARMUP_ID);
    const captured = performance.now();
    c.getContext("2d").drawImage(v, 0, 0, c.width, c.height);
    c.toBlob((blob) => {
      if (!blob || !this.live || this.ws?.readyState !== WebSocket.OPEN) return;
      const head = new DataView(new ArrayBuffer(4));
      head.setUint32(0, id);
      this.sent.set(id, captured);
      for (const [old, t] of this.sent) { // forget frames the server dropped (insertion order = age)
        if (captured - t < 120000) break;
        this.sent.delete(old);
      }
      this.ws.send(new Blob([head.buffer, blob]));
    }, "image/jpeg", 0.85);
  }

  // -- messages in ----------------------------------------------------------------------------------------
  async receive(data) {
    if (typeof data === "string") {
      this.message(JSON.parse(data));
      return;
    }
    const head = new DataView(data);
    const id = head.getUint32(0), server = head.getFloat32(4); // server: camera frame in → out of the model
    const image = await createImageBitmap(new Blob([data.slice(8)], { type: "image/jpeg" }));
    if (this.output.width !== image.width || this.output.height !== image.height) {
      this.output.width = image.width;
      this.output.height = image.height;
      this.root.dataset.output = `${image.width}x${image.height}`;
    }
    this.output.getContext("2d").drawImage(image, 0, 0);
    image.close();
    const now = performance.now();
    if (id !== WARMUP_ID && this.sent.has(id)) {
      const e2e = now - this.sent.get(id);
      this.e2e.push(e2e);
      this.transport.push(e2e - server); // this frame's time outside the server's model path (encode included)
      for (const list of [this.e2e, this.transport]) if (list.length > LATENCY_SAMPLES) list.shift();
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
    const handler = {
      started: () => this.started(m),
      stats: () => this.serverStats(m),
      progress: () => {
        this.show(`preparing: chunk ${m.done} of ${m.total}…`);
        this.root.dataset.prepare = `${m.done}/${m.total}`;
      },
      prepared: () => this.prepared(m),
      recording: () => {
        this.setRecording(true);
        this.note.textContent = `recording ${m.file}…`;
      },
      recorded: () => {
        this.setRecording(false);
        this.showTake(m);
      },
      reference_set: () => this.referenceSet(m),
      controls: () => this.showOptions(m.controls),
      stopped: () => this.ws?.close(),
      error: () => this.error(m),
    }[m.type];
    handler?.();
  }

  started(m) {
    this.size = m.size;
    this.showOptions(m.controls);
    this.recordButton.disabled = !m.can_record;
    this.recordButton.title = m.can_record ? "Record the generated frames, at the pace performed"
                                           : "this server records no takes (standalone: start it with --takes DIR)";
    this.schedule();
    this.refreshPortraits();
    this.show(`live at ${m.size}×${m.size}: warming up…`);
  }

  prepared(m) {
    this.prepareButton.disabled = false;
    this.root.dataset.prepared = "true";
    const steady = m.chunk_ms[m.chunk_ms.length - 1];
    this.show(`prepared${m.compiled ? " and compiled" : ""} in ${m.seconds.toFixed(1)} s (a chunk now takes ` +
              `${steady.toFixed(0)} ms): press Start`);
    this.idleClose();
  }

  referenceSet(m) {
    this.busy = false;
    this.root.dataset.reference = "set";
    this.showPortraits(m.portraits);
    this.note.textContent = `portrait ${m.portrait === 0 ? "of the queue" : m.portrait} set in ` +
                            `${m.seconds.toFixed(2)} s (encoding ${m.encode_seconds.toFixed(2)} s)` +
                            (this.live ? ": the stream switches at its next chunk" : "");
    this.idleClose();
  }

  error(m) {
    if (m.code?.startsWith("prepare") || m.code === "no_reference") this.prepareButton.disabled = false;
    if (this.root.dataset.reference === "encoding") {
      this.busy = false;
      this.root.dataset.reference = "error";
      this.idleClose();
    }
    this.root.dataset.error = m.code;
    this.show(`error: ${m.message}`);
  }

  serverStats(m) {
    this.stats.server = m.latency_parts;
    this.stats.dropped = m.dropped;
    this.stats.state = m.state;
    this.stats.warm = m.warm_start;
    this.showCrop(m.framing);
    this.render(); // readouts stay current even while no frame arrives
  }

  showCrop(framing) {
    if (!framing || !this.live) return;
    const [w, h] = framing.camera;
    const [x0, y0, x1, y1] = framing.crop;
    // where the picture shows inside the video element (object-fit: contain), relative to the box
    const box = this.cropBox.parentElement.getBoundingClientRect();
    const video = this.camera.getBoundingClientRect();
    const k = Math.min(video.width / w, video.height / h);
    const left = video.left - box.left + (video.width - w * k) / 2;
    const top = video.top - box.top + (video.height - h * k) / 2;
    Object.assign(this.cropBox.style, {
      display: "block", left: `${left + x0 * k}px`, top: `${top + y0 * k}px`, width: `${(x1 - x0) * k}px`,
      height: `${(y1 - y0) * k}px`, borderStyle: framing.face ? "solid" : "dashed",
    });
    Object.assign(this.root.dataset, { crop: framing.crop.join(","), face: String(framing.face),
                                       camera: `${w}x${h}` });
  }

  showTake(m) {
    this.note.replaceChildren();
    if (!m.file) {
      this.note.textContent = "nothing recorded (no generated frame yet)";
      return;
    }
    this.note.append(`saved ${m.frames} frames, ${m.seconds.toFixed(1)} s: `,
                     el("a", { href: this.host.takeURL(m.file), target: "_blank", textContent: m.file,
                               style: "color:#8cf" }));
    Object.assign(this.root.dataset, { take: m.file, takeFrames: m.frames, takeSeconds: m.seconds });
  }

  // -- readouts: what the page measured, and the server's parts of it -----------------------------------
  render() {
    const s = this.stats;
    const f = (x, d = 0) => (x == null ? "–" : x.toFixed(d));
    const e2e = median(this.e2e);
    this.show(`output ${f(s.fps, 1)} fps · dropped ${s.dropped}` + (s.warm ? " · prepared" : "") +
              (s.state && s.state !== "running" ? ` · ${s.state}` : ""));
    this.showLatency(e2e, s.server);
    Object.assign(this.root.dataset, { fps: f(s.fps, 2), latency: f(e2e), server: f(s.server?.server_ms) });
  }

  showLatency(e2e, parts) {
    if (e2e == null || !parts || parts.server_ms == null) {
      this.latency.textContent = e2e == null ? "" : `latency ${e2e.toFixed(0)} ms`;
      return;
    }
    const transport = Math.max(0, median(this.transport) - parts.encode_ms);
    const pieces = { wait: parts.wait_ms, window: parts.window_ms, encode: parts.encode_ms, transport };
    this.latency.textContent = `latency ${e2e.toFixed(0)} ms = wait ${parts.wait_ms.toFixed(0)} + window ` +
      `${parts.window_ms.toFixed(0)} (${parts.window_chunks} chunk steps; a chunk computes in ` +
      `${(parts.chunk_ms ?? 0).toFixed(0)}) + encode ${parts.encode_ms.toFixed(0)} + transport ` +
      `${transport.toFixed(0)}`;
    this.latency.title = "wait: the camera frame waits for its chunk's other frames and the device; window: the " +
      "model holds each frame for 4 chunk steps; encode: paste-back and JPEG; transport: the rest (capture, " +
      "network, decoding and drawing here)";
    const total = Object.values(pieces).reduce((a, b) => a + b, 0) || 1;
    this.bar.replaceChildren(...Object.entries(pieces).map(([name, ms]) => el("div", {
      title: `${name} ${ms.toFixed(0)} ms`,
      style: `width:${(100 * ms) / total}%;background:${BAR_COLOURS[name]}`,
    })));
    Object.assign(this.root.dataset, { transport: transport.toFixed(0), window: parts.window_ms.toFixed(0) });
  }

  show(text) {
    this.readout.textContent = text;
  }
}
