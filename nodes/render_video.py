"""PersonaLive Render Video: a driving VIDEO in, the animated VIDEO out, written to disk as it renders.

Unlike the IMAGE-batch path (Extract Motion → Stream Sampler), nothing here grows with the video's
length: a VIDEO loaded from a file is decoded one frame at a time, each finished chunk is decoded by
the VAE, optionally pasted back into the original footage, and appended to an H.264 mp4 in
output/ (fragmented: a cancelled run leaves a playable file). The driving audio is added at the end.
The returned VIDEO is backed by that file.
"""
import logging
import os
import shutil
import tempfile
from fractions import Fraction

import numpy as np
import torch

import comfy.model_management as mm
import comfy.utils
import folder_paths
from comfy_api.latest import InputImpl, io, ui

from personalive_core.media.output import Output
from personalive_core.media.face_crop import DEFAULT_SCALE
from personalive_core.media.footage import Reframer
from personalive_core.streaming.render import chunks_needed, render_stream
from personalive_core.media.video_io import to_uint8

from .common import (CATEGORY, EncodedReference, PersonaLiveModel, PersonaLiveReference, check_compatible, expect,
                     keyframe_inputs, load_networks, stream_settings)
from .face_crop import FaceCrops, PersonaLiveCrop
from .host_models import check_vae, unscale, vae_decode

DEFAULT_FPS = Fraction(25)
PREVIEW_SIZE = 512
DRIVING_CROPS = ["center", "auto"]
PASTE_TARGETS = ["none", "reference", "driving"]


# -- the driving VIDEO, frame by frame ------------------------------------------------------------
def write_wav(audio, path):
    """ComfyUI AUDIO ({"waveform": (B, C, S), "sample_rate"}) → 16-bit WAV (first item, ≤ 2 channels)."""
    import av
    wave = audio["waveform"][0].float().clamp(-1, 1).cpu().numpy()
    if wave.shape[0] > 2:
        wave = wave[:2]
    rate = int(audio["sample_rate"])
    layout = "mono" if wave.shape[0] == 1 else "stereo"
    with av.open(path, "w") as c:
        stream = c.add_stream("pcm_s16le", rate=rate, layout=layout)
        for start in range(0, wave.shape[1], 4096):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[:, start:start + 4096]), format="fltp",
                                               layout=layout)
            frame.sample_rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                c.mux(packet)
        for packet in stream.encode():
            c.mux(packet)
    return path


class DrivingVideo:
    """Iterate uint8 (H, W, 3) frames of a VIDEO: decoded lazily from the file of a VideoFromFile,
    else taken from its components. `fps`, `frames` (count if known), `audio_path` (a file holding
    the driving audio, or None)."""

    def __init__(self, video, scratch):
        self.images, self.path, self.audio_path, self.frames = None, None, None, None
        source = video.get_stream_source() if type(video).__name__ == "VideoFromFile" else None
        if source is None:
            parts = video.get_components()
            self.images = parts.images
            self.fps = Fraction(parts.frame_rate) if parts.frame_rate else DEFAULT_FPS
            self.frames = int(self.images.shape[0])
            if parts.audio is not None and parts.audio["waveform"].numel():
                self.audio_path = write_wav(parts.audio, os.path.join(scratch, "audio.wav"))
            return
        if not isinstance(source, str):  # in-memory file: put it on disk once, PyAV reads it twice
            path = os.path.join(scratch, "driving.mp4")
            source.seek(0)
            with open(path, "wb") as f:
                shutil.copyfileobj(source, f)
            source = path
        self.path = source
        import av
        try:
            with av.open(source) as c:
                if not c.streams.video:
                    raise ValueError(f"video: {source} has no video stream")
                v = c.streams.video[0]
                self.fps = Fraction(v.average_rate) if v.average_rate else DEFAULT_FPS
                self.frames = v.frames or (round(c.duration / 1e6 * self.fps) if c.duration else None)
                if c.streams.audio:
                    self.audio_path = source
        except ValueError:
            raise
        except Exception as e:
            raise ValueError(f"video: cannot open {source}: {e}") from e

    def __iter__(self):
        if self.images is not None:
            for i in range(self.images.shape[0]):
                yield to_uint8(self.images[i, ..., :3].float().cpu().numpy())
            return
        import av
        with av.open(self.path) as c:
            for frame in c.decode(video=0):
                yield frame.to_ndarray(format="rgb24")


def _limited(frames, limit):
    for i, frame in enumerate(frames):
        if limit and i >= limit:
            return
        yield frame


# -- the node -------------------------------------------------------------------------------------
class PersonaLiveRenderVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PersonaLiveRenderVideo",
            display_name="PersonaLive Render Video",
            category=CATEGORY,
            description="Animates the reference with a driving VIDEO of any length, size and aspect and writes the "
                        "result straight to an mp4 in output/ (with the driving audio): frames are read, rendered, "
                        "decoded, optionally pasted back and written chunk by chunk, so memory does not grow with "
                        "the video. Optional face crop of the driving frames and paste-back into the original "
                        "reference picture or the original driving frames.",
            inputs=[
                PersonaLiveModel.Input("model", tooltip="From 'Load PersonaLive Model'."),
                PersonaLiveReference.Input("reference",
                                           tooltip="From 'PersonaLive Encode Reference'. For real photos encode the "
                                                   "face crop of 'PersonaLive Crop Face' (size = its size)."),
                io.Vae.Input("vae", tooltip="The SD 1.x VAE (sd-vae-ft-mse) that decodes each finished chunk."),
                io.Video.Input("video", tooltip="The driving video (e.g. from 'Load Video'). A video loaded from a "
                                                "file is decoded one frame at a time."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the noise stream (one CPU generator, as the core CLI)."),
                io.Combo.Input("crop", options=DRIVING_CROPS, default="center",
                               tooltip="How driving frames become square: 'center' = centred square, resized; "
                                       "'auto' = the square around the tracked, smoothed face (any framing, any "
                                       "aspect). Frames without a face reuse the last box and are logged."),
                io.Combo.Input("paste_into", options=PASTE_TARGETS, default="none",
                               tooltip="'none': output the generated squares. 'reference': paste every frame "
                                       "back into the original reference picture (connect reference_crop and "
                                       "reference_image). 'driving': paste into the original driving frames "
                                       "(needs crop 'auto'). The output then has that picture's size."),
                io.Float.Input("crop_scale", default=DEFAULT_SCALE, min=1.0, max=4.0, step=0.05,
                               tooltip="With crop 'auto': crop side / detected face side (1.75 = the training "
                                       "framing). Use the same value as for the reference crop."),
                io.Float.Input("feather", default=0.2, min=0.01, max=1.0, step=0.01,
                               tooltip="Paste-back: width of the mask's soft edge as a fraction of the crop radius."),
                io.Int.Input("max_frames", default=0, min=0, max=10_000_000,
                             tooltip="Render only the first N driving frames (0 = all)."),
                *keyframe_inputs(),
                io.String.Input("filename_prefix", default="PersonaLive/render",
                                tooltip="Where the mp4 goes, relative to ComfyUI's output folder."),
                PersonaLiveCrop.Input("reference_crop", optional=True,
                                      tooltip="For paste_into 'reference': the crop_info of the 'PersonaLive Crop "
                                              "Face' that cut the reference picture."),
                io.Image.Input("reference_image", optional=True,
                               tooltip="For paste_into 'reference': the original reference picture (what "
                                       "'PersonaLive Crop Face' got)."),
            ],
            outputs=[io.Video.Output(display_name="video",
                                     tooltip="The rendered video, backed by the mp4 written in output/.")],
            is_output_node=True,
        )

    @classmethod
    @torch.no_grad()
    def execute(cls, model, reference, vae, video, seed, crop="center", paste_into="none",
                crop_scale=DEFAULT_SCALE, feather=0.2, max_frames=0, keyframe_threshold=17.0, max_keyframes=3,
                filename_prefix="PersonaLive/render", reference_crop=None, reference_image=None) -> io.NodeOutput:
        expect(reference, EncodedReference, "reference", "PersonaLive Encode Reference")
        check_compatible(model, reference)
        check_vae(vae)
        if crop not in DRIVING_CROPS:
            raise ValueError(f"crop {crop!r}: use one of {DRIVING_CROPS}")
        if paste_into not in PASTE_TARGETS:
            raise ValueError(f"paste_into {paste_into!r}: use one of {PASTE_TARGETS}")
        if paste_into == "driving" and crop != "auto":
            raise ValueError("paste_into 'driving' needs crop 'auto' (the paste-back warps the driving face crops "
                             "back into their frames)")
        size = reference.size
        reframer = Reframer(size, "auto" if crop == "auto" else "none", paste_into, scale=crop_scale,
                            feather=feather, log=logging.warning)
        if paste_into == "reference":
            if not isinstance(reference_crop, FaceCrops) or reference_image is None:
                raise ValueError("paste_into 'reference' needs 'reference_crop' (crop_info of 'PersonaLive Crop "
                                 "Face' on the reference picture) and 'reference_image' (that picture) connected")
            if len(reference_crop) != 1 or reference_image.shape[0] != 1:
                raise ValueError(f"reference_crop / reference_image: expected one picture, got "
                                 f"{len(reference_crop)} crop infos and {reference_image.shape[0]} images")
            reframer.set_reference_crop(to_uint8(reference_image[0, ..., :3].float().cpu().numpy()),
                                        reference_crop.infos[0])

        scratch = tempfile.mkdtemp(prefix="personalive-", dir=folder_paths.get_temp_directory())
        try:
            return cls._render(model, reference, vae, video, seed, size, reframer, max_frames,
                               stream_settings(keyframe_threshold, max_keyframes),
                               filename_prefix, scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    @classmethod
    def _render(cls, model, reference, vae, video, seed, size, reframer, max_frames, settings, filename_prefix,
                scratch):
        driving = DrivingVideo(video, scratch)
        known = min(driving.frames, max_frames) if driving.frames and max_frames else (driving.frames or max_frames)
        total = chunks_needed(known) if known else None
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, folder_paths.get_output_directory(), size, size)
        file = f"{name}_{counter:05}_.mp4"
        path = os.path.join(folder, file)
        m = load_networks(model, size)
        bar = comfy.utils.ProgressBar(total or 1)

        def decoder(latents):
            frames = vae_decode(vae, unscale(latents))
            if tuple(frames.shape[1:]) != (size, size, 3):
                raise ValueError(f"vae: decoded frames of shape {tuple(frames.shape[1:])}, expected ({size}, {size}, "
                                 "3); connect an SD 1.x VAE (sd-vae-ft-mse)")
            return frames

        def on_chunk(n, frames):
            bar.update_absolute(n, max(total or 0, n), ("JPEG", _pil(frames[-1]), PREVIEW_SIZE))
            mm.throw_exception_if_processing_interrupted()
            load_networks(model, size)  # the VAE may have pushed the networks out

        out = Output(path, driving.fps, driving.audio_path, logging.info)
        frames = reframer.driving(_limited(driving, max_frames))
        try:
            for frame in render_stream(m, reference.reference, frames, seed, False, settings, on_chunk, decoder):
                out.write(reframer.output(frame))
        except BaseException:
            logging.warning(f"PersonaLive Render Video: stopped after {out.count} frames; {path} holds them")
            raise
        finally:
            out.close()
            if reframer.report():
                logging.warning(f"PersonaLive Render Video: {reframer.report()}")
        return io.NodeOutput(InputImpl.VideoFromFile(path),
                             ui=ui.PreviewVideo([ui.SavedResult(file, subfolder, io.FolderType.output)]))


def _pil(frame):
    from PIL import Image
    return Image.fromarray(frame.float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy())
