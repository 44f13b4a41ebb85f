#!/usr/bin/env python3
"""Drive a live stream like a camera would and report what comes back.

Sends frames at a fixed rate to /personalive/live (whether or not the model keeps up, as a camera
does), and prints, every few seconds, the output fps and the end-to-end latency (frame sent →
generated frame received) measured here, plus the server's own readouts. The last line is a JSON
summary. Frames come from a video file or, without one, a synthetic moving blob.

    python scripts/live_probe.py --server http://127.0.0.1:8188 --target 14 --fps 30 --seconds 120
"""

import argparse
import asyncio
import json
import struct
import time

import cv2
import numpy as np

WARMUP_ID = 0xFFFFFFFF


def synthetic(size=256):
    yy, xx = np.mgrid[0:size, 0:size] / size
    i = 0
    while True:
        cx, cy = 0.5 + 0.2 * np.sin(i / 9), 0.5 + 0.15 * np.cos(i / 13)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.02)
        yield (np.stack([blob, 0.5 * blob + 0.3 * xx, 0.3 + 0.4 * yy], -1) * 255).astype(np.uint8)
        i += 1


def from_video(path):
    while True:
        cap = cv2.VideoCapture(path)
        ok, frame = cap.read()
        if not ok:
            raise SystemExit(f"{path}: no frames could be read")
        while ok:
            yield frame[..., ::-1]
            ok, frame = cap.read()


async def probe(args):
    import aiohttp

    frames = from_video(args.video) if args.video else synthetic()
    url = args.server.rstrip("/").replace("http", "ws", 1) + "/personalive/live"
    sent_at, latencies, out_times, report = {}, [], [], []
    async with aiohttp.ClientSession() as http, http.ws_connect(url, max_msg_size=0) as ws:
        await ws.send_json({"type": "start", "target": args.target})

        async def receive():
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.BINARY:
                    frame_id, _ = struct.unpack(">If", msg.data[:8])
                    now = time.monotonic()
                    out_times.append(now)
                    if frame_id != WARMUP_ID and frame_id in sent_at:
                        latencies.append((now, (now - sent_at.pop(frame_id)) * 1e3))
                elif msg.type == aiohttp.WSMsgType.TEXT:
                    data = msg.json()
                    if data["type"] == "error":
                        raise SystemExit(f"server: {data['message']}")
                    if data["type"] == "stats":
                        report.append(data)

        receiver = asyncio.create_task(receive())
        start = time.monotonic()
        next_print, i = start + args.every, 0
        while time.monotonic() - start < args.seconds:
            jpeg = cv2.imencode(".jpg", np.ascontiguousarray(next(frames)[..., ::-1]))[1].tobytes()
            sent_at[i] = time.monotonic()
            await ws.send_bytes(struct.pack(">I", i) + jpeg)
            i += 1
            if time.monotonic() >= next_print:
                next_print += args.every
                print(summary(start, i, out_times, latencies, report[-1:] or [{}], args.every), flush=True)
            await asyncio.sleep(max(0.0, start + i / args.fps - time.monotonic()))
        receiver.cancel()
    result = summary(start, i, out_times, latencies, report[-1:] or [{}], args.seconds, final=True)
    print(json.dumps(result))


def summary(start, sent, out_times, latencies, server, window, final=False):
    now = time.monotonic()
    recent = [lat for t, lat in latencies if t >= now - window]
    fps = sum(1 for t in out_times if t >= now - window) / window
    line = {
        "t_s": round(now - start, 1),
        "sent": sent,
        "received": len(out_times),
        "output_fps": round(fps, 2),
        "latency_ms_p50": round(float(np.median(recent)), 1) if recent else None,
        "latency_ms_max": round(max(recent), 1) if recent else None,
        "server_dropped": server[0].get("dropped"),
        "server_latency_ms_p50": server[0].get("latency_ms_p50"),
    }
    if final:
        every = [lat for _, lat in latencies]
        line.update(
            first_minute_p50=round(float(np.median([lat for t, lat in latencies if t < start + 60] or [0])), 1),
            last_minute_p50=round(float(np.median([lat for t, lat in latencies if t >= now - 60] or [0])), 1),
            overall_max=round(max(every), 1) if every else None,
        )
        return line
    return json.dumps(line)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--server", default="http://127.0.0.1:8188")
    p.add_argument("--target", required=True, help="id of the PersonaLive Live node (queued once)")
    p.add_argument("--fps", type=float, default=30.0, help="camera frames per second sent")
    p.add_argument("--seconds", type=float, default=120.0)
    p.add_argument("--every", type=float, default=10.0, help="seconds between progress lines")
    p.add_argument("--video", help="a video file to send instead of synthetic frames (looped)")
    asyncio.run(probe(p.parse_args()))


if __name__ == "__main__":
    main()
