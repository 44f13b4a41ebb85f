#!/usr/bin/env python3
"""Write the shipped example workflows, UI format (workflows/<template title>.json, loadable in the page and
listed by the Templates browser under that title) and API format (workflows/api/<name>.json, for /prompt),
from one graph description each. scripts/dev/make_thumbnails.py draws each template's thumbnail
(workflows/<template title>.jpg, the name ComfyUI's frontend asks for).

Widget order, sockets and slot types come from a running ComfyUI's /object_info (with this extension
loaded), so both files match the nodes exactly:

    python scripts/dev/make_workflows.py --server http://127.0.0.1:8188 [--out workflows]
    python scripts/dev/make_workflows.py --object-info object_info.json

Stdlib only; imports nothing from personalive_core or ComfyUI.
"""

import argparse
import json
import os
import sys
import urllib.request
import uuid

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
CLIP_NAME = "sd-image-variations-image-encoder.safetensors"
VAE_NAME = "sd-vae-ft-mse.safetensors"
# The frontend's model metadata of a loader node (`properties.models`: {name, url, directory}, the zModelFile of
# Comfy-Org/ComfyUI_frontend src/schemas/comfyWorkflowSchema.ts): its missing-models dialog offers each file whose
# name is one of the node's widget values, and the Desktop app downloads it into models/<directory>/. The files
# of the table in personalive_core/download/sources.py (tests/test_download.py checks that they agree).
HUB = "https://huggingface.co"
MODEL_FILES = {
    "CLIPVisionLoader": [
        {
            "name": CLIP_NAME,
            "directory": "clip_vision",
            "url": f"{HUB}/lambdalabs/sd-image-variations-diffusers/resolve/main/image_encoder/model.safetensors",
        }
    ],
    "VAELoader": [
        {
            "name": VAE_NAME,
            "directory": "vae",
            "url": f"{HUB}/stabilityai/sd-vae-ft-mse/resolve/main/diffusion_pytorch_model.safetensors",
        }
    ],
}

MODELS_NOTE = (
    "PersonaLive needs three kinds of weights:\n"
    "- models/personalive/: denoising_unet.pth, temporal_module.pth, reference_unet.pth, pose_guider.pth, "
    "motion_encoder.pth, motion_extractor.pth (huggingface.co/huaichang/PersonaLive, pretrained_weights/personalive/)\n"
    f"- models/clip_vision/{CLIP_NAME}: image_encoder/ weights of lambdalabs/sd-image-variations-diffusers\n"
    f"- models/vae/{VAE_NAME}: diffusion_pytorch_model.safetensors of stabilityai/sd-vae-ft-mse\n\n"
    "Use the same size and resize in 'Encode Reference' and 'Extract Motion'."
)

# id: (class_type, {input: value | (source id, output slot)}, (x, y))
LOADERS = {
    1: ("LoadImage", {"image": "reference.png"}, (0, 0)),
    2: ("LoadVideo", {"file": "driving.mp4"}, (0, 380)),
    4: ("PersonaLiveLoadModel", {"weights": "personalive", "dtype": "auto"}, (340, -200)),
}
CLIP_VAE = {  # below the loader, whose Download models widget makes it taller (DOM_WIDGET_HEIGHT)
    5: ("CLIPVisionLoader", {"clip_name": CLIP_NAME}, (340, 100)),
    6: ("VAELoader", {"vae_name": VAE_NAME}, (340, 210)),
}
# Height of the DOM widgets the pack's scripts add (web/js/): the saved size holds them, as frontends from 1.3x keep
# a loaded node at its saved size
DOM_WIDGET_HEIGHT = {"PersonaLiveLoadModel": 90}
SAMPLER = {
    "model": (4, 0),
    "reference": (7, 0),
    "motion": (8, 0),
    "vae": (6, 0),
    "seed": 42,
    "keyframe_threshold": 17.0,
    "max_keyframes": 3,
    "keep_warmup": False,
}
ENCODE = {"model": (4, 0), "clip_vision": (5, 0), "vae": (6, 0), "image": (1, 0), "size": 512, "resize": "stretch"}

# The Templates browser shows a custom node's template under its file name (no index, no i18n for them in
# frontends 1.27-1.58), so the UI files are named by their title: plain ASCII, no characters that a file
# system or a URL path would refuse (checked by tests/test_comfy_host.py).
GRAPHS = {
    "personalive_portrait_to_video": dict(
        template="PersonaLive - Portrait to video",
        title="PersonaLive: portrait + driving video → mp4 with the driving audio",
        note="Animates the portrait (Load Image) with the driving video (Load Video). The result keeps the "
        "driving video's frame rate and audio.\n\n" + MODELS_NOTE,
        nodes={
            **LOADERS,
            **CLIP_VAE,
            3: ("GetVideoComponents", {"video": (2, 0)}, (340, 380)),
            7: ("PersonaLiveEncodeReference", ENCODE, (700, -200)),
            8: (
                "PersonaLiveExtractMotion",
                {
                    "model": (4, 0),
                    "reference_image": (1, 0),
                    "size": 512,
                    "resize": "stretch",
                    "driving_images": (3, 0),
                    "max_frames": 0,
                    "preview": "keypoints",
                },
                (700, 120),
            ),
            9: ("PersonaLiveStreamSampler", SAMPLER, (1080, -60)),
            10: ("CreateVideo", {"images": (9, 0), "fps": (3, 2), "audio": (3, 1)}, (1440, -60)),
            11: (
                "SaveVideo",
                {"video": (10, 0), "filename_prefix": "PersonaLive/portrait", "format": "auto", "codec": "auto"},
                (1720, -60),
            ),
        },
    ),
    "personalive_motion_inspection": dict(
        template="PersonaLive - Motion inspection",
        title="PersonaLive: motion inspection (keypoints next to the driving video)",
        note="Shows what drives the animation, without rendering it: each cropped driving frame next to the "
        "3D keypoints the pose guider sees, with the face box used for the motion tokens. Cheap: "
        "no CLIP, no VAE, no denoising.\n\n" + MODELS_NOTE,
        nodes={
            **LOADERS,
            3: ("GetVideoComponents", {"video": (2, 0)}, (340, 380)),
            8: (
                "PersonaLiveExtractMotion",
                {
                    "model": (4, 0),
                    "reference_image": (1, 0),
                    "size": 512,
                    "resize": "stretch",
                    "driving_images": (3, 0),
                    "max_frames": 0,
                    "preview": "side by side",
                },
                (700, 120),
            ),
            10: ("CreateVideo", {"images": (8, 1), "fps": (3, 2), "audio": (3, 1)}, (1080, 120)),
            11: (
                "SaveVideo",
                {"video": (10, 0), "filename_prefix": "PersonaLive/motion", "format": "auto", "codec": "auto"},
                (1360, 120),
            ),
        },
    ),
    "personalive_long_video": dict(
        template="PersonaLive - Long video",
        title="PersonaLive: long driving video (streamed to disk)",
        note="For long driving videos: 'PersonaLive Render Video' reads the VIDEO one frame at a time, renders, "
        "decodes and appends every chunk to an mp4 in output/ (with the driving audio), so memory does not "
        "grow with the video's length. Set max_frames to try a short part first; crop 'auto' follows the "
        "face in footage of any framing.\n\n" + MODELS_NOTE,
        nodes={
            **LOADERS,
            **CLIP_VAE,
            7: ("PersonaLiveEncodeReference", ENCODE, (700, -200)),
            13: (
                "PersonaLiveRenderVideo",
                {
                    "model": (4, 0),
                    "reference": (7, 0),
                    "vae": (6, 0),
                    "video": (2, 0),
                    "seed": 42,
                    "crop": "center",
                    "paste_into": "none",
                    "max_frames": 0,
                    "keyframe_threshold": 17.0,
                    "max_keyframes": 3,
                    "filename_prefix": "PersonaLive/long",
                },
                (1080, -60),
            ),
        },
    ),
    "personalive_live_webcam": dict(
        template="PersonaLive - Live webcam",
        title="PersonaLive: live webcam",
        note="Queue once (Ctrl+Enter) to encode the reference and hand it to 'PersonaLive Live', then press Start in "
        "that node: your camera drives the portrait (the face is found and followed anywhere in the picture: "
        "crop 'auto'), the generated frames show beside it with output fps and the latency's parts. "
        "paste_into 'driving' puts the avatar into the whole camera picture (for OBS: Output page). To swap "
        "the portrait while live, drop or paste a picture onto the node, or pick a recent one; queueing again "
        "brings back the graph's own. 256 is the live size for most GPUs; 512 needs a fast one.\n\n" + MODELS_NOTE,
        nodes={
            1: LOADERS[1],
            4: LOADERS[4],
            **CLIP_VAE,
            7: ("PersonaLiveEncodeReference", {**ENCODE, "size": 256}, (700, -200)),
            14: (
                "PersonaLiveLive",
                {
                    "model": (4, 0),
                    "reference": (7, 0),
                    "vae": (6, 0),
                    "clip_vision": (5, 0),
                    "seed": 0,
                    "keyframe_threshold": 17.0,
                    "max_keyframes": 3,
                    "crop": "auto",
                    "paste_into": "none",
                },
                (1080, -200),
            ),
        },
    ),
    "crop_paste_back": dict(
        template="PersonaLive - Crop face and paste back",
        title="PersonaLive: real photo + real video, face crop and paste-back (any size, any length)",
        note=(
            "For real-world footage of any size and aspect ratio. 'Crop Face' cuts the square around the face of the "
            "reference photo (the framing PersonaLive was trained on); 'Render Video' tracks the face in every "
            "driving frame (crop 'auto'), renders, pastes each generated face back into the original photo at its "
            "full resolution (paste_into 'reference'; 'driving' pastes into the original driving frames instead) and "
            "writes the mp4 with the driving audio to output/ as it goes: memory stays flat for hour-long videos, and"
            " a cancelled run leaves a playable file. Set max_frames to try a short part first. Use the same size in "
            "'Crop Face' and 'Encode Reference', and the same scale as the render's crop_scale."
            "\n\n" + MODELS_NOTE
        ),
        nodes={
            **LOADERS,
            **CLIP_VAE,
            12: (
                "PersonaLiveCropFace",
                {
                    "image": (1, 0),
                    "size": 512,
                    "crop_scale": 1.75,
                    "shift": 0.0,
                    "smoothing": False,
                    "detector": "auto",
                },
                (700, -420),
            ),
            7: ("PersonaLiveEncodeReference", {**ENCODE, "image": (12, 0)}, (1060, -200)),
            13: (
                "PersonaLiveRenderVideo",
                {
                    "model": (4, 0),
                    "reference": (7, 0),
                    "vae": (6, 0),
                    "video": (2, 0),
                    "seed": 42,
                    "crop": "auto",
                    "paste_into": "reference",
                    "crop_scale": 1.75,
                    "feather": 0.2,
                    "max_frames": 0,
                    "keyframe_threshold": 17.0,
                    "max_keyframes": 3,
                    "filename_prefix": "PersonaLive/crop_paste_back",
                    "reference_crop": (12, 1),
                    "reference_image": (1, 0),
                },
                (1420, -60),
            ),
        },
    ),
}


def ordered_inputs(info):
    inputs = info["input"]
    order = info.get("input_order") or {g: list(inputs.get(g, {})) for g in ("required", "optional")}
    return [
        (name, inputs[group][name], group == "optional")
        for group in ("required", "optional")
        for name in order.get(group, [])
        if name in inputs.get(group, {})
    ]


def is_widget(spec):
    kind, opts = spec[0], (spec[1] if len(spec) > 1 else {})
    return (isinstance(kind, list) or kind in WIDGET_TYPES) and not opts.get("forceInput")


def slot_type(spec):
    return "COMBO" if isinstance(spec[0], list) else spec[0]


def default(spec):
    opts = spec[1] if len(spec) > 1 else {}
    if "default" in opts:
        return opts["default"]
    options = spec[0] if isinstance(spec[0], list) else opts.get("options", [])
    return options[0] if options else None


def properties(kind):
    """A node's properties: the search-and-replace name, and for a model loader the files it selects."""
    models = MODEL_FILES.get(kind)
    return {"Node name for S&R": kind, **({"models": [dict(m) for m in models]} if models else {})}


def build(graph, object_info):
    api, nodes, links = {}, [], []
    out_links = {}  # (node, slot) -> [link ids]
    for nid, (_kind, values, _) in graph["nodes"].items():
        for name, value in values.items():
            if isinstance(value, tuple):
                links.append([len(links) + 1, value[0], value[1], nid, name, None])
                out_links.setdefault(value, []).append(len(links))
    link_of = {(link[3], link[4]): link for link in links}
    for order, (nid, (kind, values, pos)) in enumerate(sorted(graph["nodes"].items())):
        info = object_info.get(kind)
        if info is None:
            sys.exit(f"{kind} is not known to the server: is the extension loaded?")
        unknown = set(values) - {name for name, _, _ in ordered_inputs(info)}
        if unknown:
            sys.exit(f"{kind} has no input(s) {sorted(unknown)}")
        inputs, widgets, api_inputs = [], [], {}
        for name, spec, optional in ordered_inputs(info):
            value = values.get(name)
            link = link_of.get((nid, name))
            if link:
                link[4] = len(inputs)  # target slot: position in the node's socket list
                link[5] = slot_type(spec)
                api_inputs[name] = [str(link[1]), link[2]]
            if is_widget(spec):
                shown = default(spec) if link or value is None else value
                widgets.append(shown)
                opts = spec[1] if len(spec) > 1 else {}
                if opts.get("control_after_generate"):
                    widgets.append("fixed")
                if any(opts.get(k) for k in ("image_upload", "video_upload", "audio_upload")):
                    widgets.append("image")
                if not link:
                    api_inputs[name] = shown
                    continue
            elif value is None:
                continue
            entry = {"name": name, "type": slot_type(spec), "link": link[0] if link else None}
            if is_widget(spec):
                entry["widget"] = {"name": name}
            if optional:
                entry["shape"] = 7
            inputs.append(entry)
        outputs = [
            {"name": out_name, "type": out_type, "slot_index": i, "links": out_links.get((nid, i), [])}
            for i, (out_type, out_name) in enumerate(zip(info["output"], info["output_name"]))
        ]
        height = 60 + 26 * (len(inputs) + len(widgets)) + DOM_WIDGET_HEIGHT.get(kind, 0)
        nodes.append(
            {
                "id": nid,
                "type": kind,
                "pos": list(pos),
                "size": [300, height],
                "flags": {},
                "order": order,
                "mode": 0,
                "inputs": inputs,
                "outputs": outputs,
                "properties": properties(kind),
                "widgets_values": widgets,
            }
        )
        api[str(nid)] = {"class_type": kind, "inputs": api_inputs, "_meta": {"title": info.get("display_name") or kind}}
    note_id = max(graph["nodes"]) + 1
    nodes.append(
        {
            "id": note_id,
            "type": "Note",
            "pos": [0, -540],
            "size": [660, 300],
            "flags": {},
            "order": len(nodes),
            "mode": 0,
            "inputs": [],
            "outputs": [],
            "properties": {},
            "widgets_values": [graph["title"] + "\n\n" + graph["note"]],
            "color": "#432",
            "bgcolor": "#653",
        }
    )
    ui = {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, "personalive/" + graph["title"])),
        "revision": 0,
        "last_node_id": note_id,
        "last_link_id": len(links),
        "nodes": nodes,
        "links": links,
        "groups": [],
        "config": {},
        "extra": {"ds": {"scale": 0.8, "offset": [60, 480]}},
        "version": 0.4,
    }
    return ui, api


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--server", help="URL of a running ComfyUI with this extension, e.g. http://127.0.0.1:8188")
    src.add_argument("--object-info", help="a saved /object_info JSON")
    p.add_argument(
        "--out",
        default=os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "workflows"),
    )
    a = p.parse_args(argv)
    if a.server:
        with urllib.request.urlopen(a.server.rstrip("/") + "/object_info", timeout=120) as r:
            object_info = json.loads(r.read())
    else:
        with open(a.object_info) as f:
            object_info = json.load(f)
    os.makedirs(os.path.join(a.out, "api"), exist_ok=True)
    for name, graph in GRAPHS.items():
        ui, api = build(graph, object_info)
        for path, data in (
            (os.path.join(a.out, graph["template"] + ".json"), ui),
            (os.path.join(a.out, "api", name + ".json"), api),
        ):
            with open(path, "w") as f:
                json.dump(data, f, indent=1)
                f.write("\n")
            print("wrote", path)


if __name__ == "__main__":
    main()
