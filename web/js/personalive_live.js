// PersonaLive Live node: the shared live widget (personalive_live_widget.js) inside ComfyUI. The glue here is
// what only ComfyUI has: its API base URL, its /view route for recorded takes (output/PersonaLive/), and the
// node's own widgets as the live options (expression, head_pose, smoothness, crop, paste_into: whichever of the
// protocol's keys the node has), sent to the running stream whenever they change.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { LiveWidget } from "./personalive_live_widget.js";

const NODE = "PersonaLiveLive";
const MIN_WIDTH = 520; // room for the camera and the generated frames side by side

function comfyHost(node) {
  return {
    target: () => String(node.id),
    url: (path) => new URL(api.apiURL(path), window.location.href).toString(),
    takeURL: (file) => {
      const cut = file.lastIndexOf("/");
      const [subfolder, filename] = cut < 0 ? ["", file] : [file.slice(0, cut), file.slice(cut + 1)];
      return api.apiURL(`/view?filename=${encodeURIComponent(filename)}&subfolder=${encodeURIComponent(subfolder)}` +
                        "&type=output");
    },
    values: (names) => {
      const values = {};
      for (const w of node.widgets || []) {
        if (names.includes(w.name)) values[w.name] = typeof w.value === "string" ? w.value : Number(w.value);
      }
      return values;
    },
    idle: "queue the workflow once, then Start (drop a portrait here to swap it)",
  };
}

app.registerExtension({
  name: "PersonaLive.Live",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE) return;
    const created = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = created?.apply(this, arguments);
      const widget = new LiveWidget(comfyHost(this));
      this.personaliveLive = widget;
      for (const w of this.widgets || []) {
        const callback = w.callback;
        w.callback = function () {
          const out = callback?.apply(this, arguments);
          if (widget.keys?.includes(w.name)) widget.controlsChanged();
          return out;
        };
      }
      this.addDOMWidget("live", "personalive_live", widget.root, { serialize: false, getMinHeight: () => 400 });
      this.setSize([Math.max(this.size[0], MIN_WIDTH), Math.max(this.size[1], 760)]);
      const configure = this.onConfigure;
      this.onConfigure = function () { // a saved workflow's size may predate the widget: keep it usable
        const out = configure?.apply(this, arguments);
        const [width, height] = this.computeSize();
        this.setSize([Math.max(this.size[0], width, MIN_WIDTH), Math.max(this.size[1], height)]);
        return out;
      };
      const removed = this.onRemoved;
      this.onRemoved = function () {
        widget.stop();
        return removed?.apply(this, arguments);
      };
      return r;
    };
  },
});
