"""Output-page fan-out: newest frame per viewer, the newest stream of a target feeds its viewers."""

import asyncio
import threading

from personalive_core.live.viewers import LatestFrame, Viewers, page


def test_a_slow_viewer_gets_the_newest_frame_and_the_rest_are_dropped():
    async def main():
        slot = LatestFrame(asyncio.get_running_loop())
        worker = threading.Thread(target=lambda: [slot.put_threadsafe(bytes([i])) for i in range(5)])
        worker.start()  # the stream publishes 5 frames while the viewer is busy
        worker.join()
        await asyncio.sleep(0)
        first = await slot.get()
        slot.put_threadsafe(b"\x09")
        return first, await slot.get(), slot.dropped

    first, second, dropped = asyncio.run(main())
    assert first == b"\x04" and second == b"\x09" and dropped == 4


def test_the_newest_stream_of_a_target_feeds_every_viewer():
    async def main():
        loop = asyncio.get_running_loop()
        viewers = Viewers()
        a, b, other = LatestFrame(loop), LatestFrame(loop), LatestFrame(loop)
        viewers.watch("5", a)
        viewers.watch("5", b)
        viewers.watch("6", other)
        viewers.feed("5", 1)
        viewers.feed("5", 2)  # a second stream on the same node takes over its pages
        viewers.publish("5", 1, b"old")
        viewers.publish("5", 2, b"new")
        viewers.unfeed("5", 1)  # the first stream ending changes nothing
        viewers.publish("5", 2, b"newer")
        await asyncio.sleep(0)
        got = [await a.get(), await b.get()]
        viewers.unwatch("5", a)
        return got, other.frame, viewers.counts()

    got, other, counts = asyncio.run(main())
    assert got == [b"newer", b"newer"] and other is None and counts == {"5": 1, "6": 1}


def test_the_page_names_its_target_safely():
    html = page("<5>", 256)
    assert "&lt;5&gt;" in html and "<5>" not in html and 'width="256"' in html
