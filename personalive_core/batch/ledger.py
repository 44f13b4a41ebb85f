"""The batch's record: `results.jsonl` in the output folder, one JSON line per row, and a scratch index.

Each finished job appends its line at once (flushed to disk), so a crash or a Ctrl-C loses no finished work;
at the end the file is rewritten (temporary name, then renamed) with one line per row, in the manifest's
order, the latest record of each output winning. The driver's memory does not grow with the manifest: the
rows, the earlier records and the outputs already taken live in an SQLite file in the temporary folder,
which also finds two rows writing the same output.

A line: row, out, status (done, failed, invalid), output, error, attempts, seconds, worker, hash (of the
inputs' content and the options, `pipelines.job_hash`), inputs (each input's size/mtime and sha256, so a
re-run hashes only files that changed), reference, driving, finished (UTC time).
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from typing import IO, Any

from ..errors import InputError
from .manifest import Entry

RESULTS = "results.jsonl"
LOCK = ".batch.lock"  # held by the one driver writing to a folder
PAGE = 256  # rows fetched at a time


def _lock(path: str) -> IO[bytes]:
    """An exclusive lock on `path` for this process's lifetime; InputError when another driver holds it."""
    f = open(path, "ab")  # noqa: SIM115 - held until close()
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise InputError(
            f"another batch is writing to {os.path.dirname(path)}: wait for it to finish, or give "
            "this one another --out"
        ) from None
    return f


class Ledger:
    """results.jsonl of `folder` and the index of this run (`close()` writes the file in its final form)."""

    def __init__(self, folder: str) -> None:
        os.makedirs(folder, exist_ok=True)
        self.folder, self.path = folder, os.path.join(folder, RESULTS)
        self.lock = _lock(os.path.join(folder, LOCK))
        self.scratch = tempfile.TemporaryDirectory(prefix="personalive-batch-")
        self.db = sqlite3.connect(os.path.join(self.scratch.name, "index.sqlite"), isolation_level=None)
        self.db.executescript("""
            PRAGMA synchronous = OFF; PRAGMA journal_mode = MEMORY;  -- scratch: results.jsonl is the record
            CREATE TABLE previous (key TEXT PRIMARY KEY, record TEXT);
            CREATE TABLE rows (number INTEGER PRIMARY KEY, key TEXT UNIQUE, entry TEXT);
            CREATE TABLE outcome (key TEXT PRIMARY KEY, record TEXT);""")
        self.unreadable = self._load()
        self.appender = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - for the whole run, see close()

    def _load(self) -> int:
        """Earlier records into the index (the last line of an output wins); the count of unreadable lines
        (a line cut off by a crash)."""
        if not os.path.isfile(self.path):
            return 0
        bad = 0
        self.db.execute("BEGIN")
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                try:
                    record = json.loads(line)
                    key = record.get("out") if record.get("status") != "invalid" else None
                except (json.JSONDecodeError, AttributeError):
                    bad += 1
                    continue
                if isinstance(key, str):
                    self.db.execute("INSERT OR REPLACE INTO previous VALUES (?, ?)", (key, line.strip()))
        self.db.execute("COMMIT")
        return bad

    # -- rows --------------------------------------------------------------------------------------
    def add(self, entry: Entry) -> Entry:
        """Take a checked row; a second row with the same output comes back as a bad row."""
        key = None if entry.error else entry.out
        try:
            self.db.execute("INSERT INTO rows VALUES (?, ?, ?)", (entry.number, key, json.dumps(entry.to_dict())))
        except sqlite3.IntegrityError:
            (first,) = self.db.execute("SELECT entry FROM rows WHERE key = ?", (key,)).fetchone()
            label = json.loads(first)["label"]
            entry = replace(
                entry,
                error=f"{entry.label}: out {entry.out!r} is also the output of {label}; give one of them another 'out'",
            )
            self.db.execute("INSERT INTO rows VALUES (?, NULL, ?)", (entry.number, json.dumps(entry.to_dict())))
        return entry

    def begin(self) -> None:
        self.db.execute("BEGIN")

    def commit(self) -> None:
        self.db.execute("COMMIT")

    def entries(self) -> Iterator[Entry]:
        """The good rows, in order, a page at a time."""
        last = -1
        while True:
            page = self.db.execute(
                "SELECT number, entry FROM rows WHERE key IS NOT NULL AND number > ? ORDER BY number LIMIT ?",
                (last, PAGE),
            ).fetchall()
            if not page:
                return
            last = page[-1][0]
            for _, text in page:
                yield Entry.from_dict(json.loads(text))

    # -- records -----------------------------------------------------------------------------------
    def previous(self, key: str) -> dict[str, Any] | None:
        found = self.db.execute("SELECT record FROM previous WHERE key = ?", (key,)).fetchone()
        return json.loads(found[0]) if found else None

    def record(self, record: dict[str, Any]) -> None:
        """One finished job: appended to results.jsonl and on disk before this returns."""
        line = json.dumps(record)
        self.appender.write(line + "\n")
        self.appender.flush()
        os.fsync(self.appender.fileno())
        self.db.execute("INSERT OR REPLACE INTO outcome VALUES (?, ?)", (record["out"], line))

    def close(self) -> None:
        """Rewrite results.jsonl: one line per row in order (this run's record, else the earlier one, else the
        bad row's), then the earlier records of outputs no row names now (kept, not lost)."""
        self.appender.close()
        tmp = self.path + ".partial"
        with open(tmp, "w", encoding="utf-8") as f:
            for line in self._final_lines():
                f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self.db.close()
        self.scratch.cleanup()
        os.remove(self.lock.name)  # (a driver that finds the lock held gives up at once: no one waits on it)
        self.lock.close()

    def _final_lines(self) -> Iterator[str]:
        rows = self.db.execute("""
            SELECT rows.entry, outcome.record, previous.record FROM rows
            LEFT JOIN outcome ON outcome.key = rows.key LEFT JOIN previous ON previous.key = rows.key
            ORDER BY rows.number""")
        for entry, now, before in rows:
            if now or before:
                yield now or before
            else:
                e = Entry.from_dict(json.loads(entry))
                if e.error:
                    yield json.dumps(
                        {
                            "row": e.number,
                            "out": e.out or None,
                            "status": "invalid",
                            "error": e.error,
                            "reference": e.reference or None,
                            "driving": e.driving or None,
                        }
                    )
        yield from (
            r
            for (r,) in self.db.execute(
                "SELECT record FROM previous WHERE key NOT IN (SELECT key FROM rows WHERE key IS NOT NULL)"
            )
        )
