// Download models: a button on Load PersonaLive Model that fetches what the PersonaLive, CLIP vision and VAE
// folders lack, through the pack's route (nodes/downloads.py, /personalive/models). It shows the bytes of the
// file in flight and of the whole run, cancels (partial files are kept) and resumes (press it again), and
// refreshes the loaders' file lists when done, so the workflow queues at once. One poller serves every such
// node on the page: the download runs on the server, once.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const NODE = "PersonaLiveLoadModel";
const POLL_MS = 500;
const widgets = new Set();
let polling = null;

function el(tag, props = {}, children = []) {
  const e = Object.assign(document.createElement(tag), props);
  for (const c of children) e.append(c);
  return e;
}

function human(n) { // decimal units, as the hub shows sizes
  if (n == null) return "?";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (Math.abs(n) >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return i ? `${n.toFixed(1)} ${units[i]}` : `${n} B`;
}

async function call(method, path) {
  const r = await api.fetchApi(path, { method, cache: "no-store" });
  if (!r.ok) throw new Error(`${method} /api${path}: HTTP ${r.status}`);
  return r.json();
}

async function refreshCombos() {
  // the frontend's own "Refresh Node Definitions" (key R): new lists for every combo, in 1.27 and in 1.5x
  const command = app.extensionManager?.command;
  if (command?.execute) await command.execute("Comfy.RefreshNodeDefinitions");
  else await app.refreshComboInNodes();
}

function each(fn) {
  for (const w of widgets) fn(w);
}

async function showLacking() {
  try {
    const models = await call("GET", "/personalive/models");
    each((w) => w.lacking(models.lacking));
    if (models.download.state === "running") poll();
  } catch (e) {
    each((w) => w.problem(`cannot reach the download route: ${e.message}`));
  }
}

function poll() {
  if (polling) return;
  polling = setInterval(async () => {
    let status;
    try {
      status = await call("GET", "/personalive/models/download");
    } catch (e) {
      each((w) => w.problem(e.message));
      return;
    }
    each((w) => w.progress(status));
    if (status.state === "running") return;
    clearInterval(polling);
    polling = null;
    if (status.state === "done") await refreshCombos();
    each((w) => w.finished(status));
    await showLacking();
  }, POLL_MS);
}

async function start() {
  each((w) => w.starting());
  let status;
  try {
    status = await call("POST", "/personalive/models/download");
  } catch (e) {
    each((w) => w.problem(e.message));
    return;
  }
  each((w) => w.progress(status));
  poll();
}

class DownloadWidget {
  constructor(node) {
    this.node = node;
    this.button = el("button", { textContent: "Download models", className: "pl-download",
                                 title: "Fetch what models/personalive, models/clip_vision and models/vae lack from " +
                                        "Hugging Face (HF_ENDPOINT on the server: a mirror), verified; resumable" });
    this.cancelButton = el("button", { textContent: "Cancel", className: "pl-cancel",
                                       title: "Stop; the partial file is kept and resumes on the next press" });
    this.status = el("div", { className: "pl-status", textContent: "checking the model folders…" });
    this.root = el("div", { className: "personalive-download" }, [
      el("div", { className: "pl-controls" }, [this.button, this.cancelButton]),
      this.status,
    ]);
    this.root.style.cssText = "display:flex;flex-direction:column;gap:4px;font:12px sans-serif;color:#ddd";
    this.root.querySelector(".pl-controls").style.cssText = "display:flex;gap:4px";
    this.status.style.cssText = "height:2.6em;overflow:hidden;white-space:pre-wrap;word-break:break-word";
    this.cancelButton.style.display = "none";
    this.button.onclick = () => start();
    this.cancelButton.onclick = () => call("POST", "/personalive/models/cancel").catch((e) => this.problem(e.message));
  }

  set(state, text, label = "Download models") {
    this.root.dataset.state = state;
    this.status.textContent = text;
    this.button.textContent = label;
    this.button.disabled = state === "running" || state === "complete";
    this.cancelButton.style.display = state === "running" ? "" : "none";
  }

  lacking(files) {
    this.root.dataset.lacking = String(files.length);
    // a run's outcome stays shown (its error, where a cancel stopped) until the next press, unless all is there
    const state = this.root.dataset.state;
    if (state === "running" || (files.length && (state === "failed" || state === "cancelled"))) return;
    if (!files.length) {
      this.set("complete", "All models present (PersonaLive, CLIP vision, VAE).", "Models present");
      return;
    }
    const known = files.every((f) => f.size != null);
    const total = files.reduce((s, f) => s + (f.size || 0), 0);
    const partial = files.reduce((s, f) => s + f.partial, 0);
    const folders = {};
    for (const f of files) folders[f.folder] = (folders[f.folder] || 0) + 1;
    const where = Object.entries(folders).map(([folder, n]) => `${folder} ${n}`).join(", ");
    const size = known ? `, ${human(total)}` : "";
    const resume = partial ? `; ${human(partial)} already here resumes` : "";
    this.set("lacking", `${files.length} file(s) missing${size} (${where})${resume}`,
             partial ? "Resume download" : "Download models");
    this.status.title = files.map((f) => `models/${f.name} ← huggingface.co/${f.source}`).join("\n");
  }

  starting() {
    this.set("running", "starting the download…", "Downloading…");
  }

  progress(s) {
    if (s.state !== "running") return;
    const current = s.files.find((f) => f.state === "downloading") || s.files.find((f) => f.state === "waiting");
    const file = current ? `${current.name}: ${human(current.done)} / ${human(current.total)}\n` : "";
    this.set("running", `${file}overall ${human(s.done)} / ${human(s.total)} (${s.files.length} file(s))`,
             "Downloading…");
    Object.assign(this.root.dataset, { done: s.done, total: s.total ?? "" });
  }

  finished(s) {
    this.root.dataset.result = s.state;
    if (s.state === "done") {
      this.set("done", `Downloaded ${s.files.length} file(s), ${human(s.done)}; the loaders' lists are refreshed.`);
    } else if (s.state === "cancelled") {
      this.set("cancelled", `Cancelled at ${human(s.done)} of ${human(s.total)}; the partial file is kept.`,
               "Resume download");
    } else {
      this.set("failed", `Download failed: ${s.error || s.state}`, "Retry download");
    }
  }

  problem(text) {
    this.set("failed", text, "Retry download");
  }
}

app.registerExtension({
  name: "PersonaLive.Download",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE) return;
    const created = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = created?.apply(this, arguments);
      const widget = new DownloadWidget(this);
      widgets.add(widget);
      this.personaliveDownload = widget;
      this.addDOMWidget("download", "personalive_download", widget.root, { serialize: false, getMinHeight: () => 70 });
      this.setSize([Math.max(this.size[0], 320), this.size[1]]);
      const removed = this.onRemoved;
      this.onRemoved = function () {
        widgets.delete(widget);
        return removed?.apply(this, arguments);
      };
      showLacking();
      return r;
    };
  },
});
