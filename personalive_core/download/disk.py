"""Free disk space, checked before anything is fetched."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

from ..errors import DownloadError
from .report import human_size


def existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def disk_free(path: Path) -> int:
    return shutil.disk_usage(existing_ancestor(path)).free


def check_free_space(needs: Mapping[Path, int], free_bytes: Callable[[Path], int] | None = None) -> None:
    """Fail before any transfer when a drive lacks room: `needs` maps destination folders to bytes still to
    write there; folders on one drive add up. `free_bytes(folder)`: free space (default: the drive's)."""
    drives: dict[int, tuple[Path, int]] = {}
    for folder, n in needs.items():
        anchor = existing_ancestor(folder)
        dev = anchor.stat().st_dev
        first, total = drives.get(dev, (anchor, 0))
        drives[dev] = (first, total + n)
    problems = []
    for anchor, need in drives.values():
        free = (free_bytes or disk_free)(anchor)
        if need > free:
            problems.append(
                f"{human_size(need)} to write on the drive of {anchor}, {human_size(free)} free: "
                f"{human_size(need - free)} missing"
            )
    if problems:
        raise DownloadError(
            "not enough free disk space: "
            + "; ".join(problems)
            + ". Free that much space or download into another folder; nothing was transferred."
        )
