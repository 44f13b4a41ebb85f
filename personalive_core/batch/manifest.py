"""The jobs of a batch: a manifest (CSV or JSONL, one job a row) or one portrait × every video, read as a stream.

A row names `reference` and `driving` (paths relative to the manifest's folder), optionally `out` (a file
name in the output folder; default `<reference stem>__<driving stem>.mp4`) and any render option under the
config's own field names (`seed`, `size`, `head_pose`, ...). For the comfyui engine a key `Node.input` (a node
id or class_type, then the input) sets that input of the workflow for this row. Rows are numbered as the
file's lines (a CSV's header is row 1), which is how a bad row is reported.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..config import ConfigError, FieldInfo, StreamConfig, fields_of
from ..errors import InputError
from ..pipelines import IMAGE_SUFFIXES, OUTPUT_SUFFIXES, VIDEO_SUFFIXES

PATH_KEYS = ("reference", "driving", "out")
# fields the workers' models are loaded with (device, dtype, speed): one value for the whole batch
MODEL_FIELDS = tuple(name for name, info in fields_of(StreamConfig).items() if info.part in ("precision", "speed"))
TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


@dataclass(frozen=True)
class Row:
    """One row as read: where it comes from (`label`, `number`) and its raw values."""

    number: int
    label: str  # "manifest.csv row 4", for messages
    values: dict[str, Any]


@dataclass(frozen=True)
class Entry:
    """A checked row: its job's inputs and options, or the error that makes it a bad row."""

    number: int
    label: str
    reference: str = ""
    driving: str = ""
    out: str = ""
    options: dict[str, Any] = field(default_factory=dict)  # config fields given (command line, then the row)
    inputs: dict[str, Any] = field(default_factory=dict)  # workflow inputs "Node.input" (comfyui engine)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "label": self.label,
            "reference": self.reference,
            "driving": self.driving,
            "out": self.out,
            "options": self.options,
            "inputs": self.inputs,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Entry:
        return cls(**d)


# -- reading -------------------------------------------------------------------------------------------
def manifest_rows(path: str) -> Iterator[Row]:
    """The rows of a CSV (header: column names) or JSONL (one object a line) manifest, one at a time."""
    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise InputError(f"manifest {path} not found")
    if path.lower().endswith((".jsonl", ".ndjson", ".json")):
        yield from _jsonl_rows(path, name)
    elif path.lower().endswith((".csv", ".tsv")):
        yield from _csv_rows(path, name)
    else:
        raise InputError(
            f"manifest {path}: use a .csv (a header row of column names) or a .jsonl file (one JSON object a line)"
        )


def _csv_rows(path: str, name: str) -> Iterator[Row]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f, delimiter="\t" if path.lower().endswith(".tsv") else ",")
        for values in reader:
            line = reader.line_num
            if None in values:
                yield Row(line, f"{name} row {line}", {"": "more cells than the header has columns"})
                continue
            if (next(iter(values.values()), "") or "").lstrip().startswith("#"):
                continue  # a comment row
            given = {k.strip(): v.strip() for k, v in values.items() if k and v is not None and v.strip() != ""}
            if given:
                yield Row(line, f"{name} row {line}", given)


def _jsonl_rows(path: str, name: str) -> Iterator[Row]:
    with open(path, encoding="utf-8") as f:
        for line, text in enumerate(f, 1):
            text = text.strip()
            if not text or text.startswith("#"):
                continue
            try:
                values = json.loads(text)
            except json.JSONDecodeError as e:
                yield Row(line, f"{name} row {line}", {"": f"not JSON ({e.msg} at column {e.colno})"})
                continue
            if not isinstance(values, dict):
                values = {"": f"expected a JSON object, got {type(values).__name__}"}
            yield Row(line, f"{name} row {line}", values)


def pair_rows(reference: str, driving: str) -> Iterator[Row]:
    """Every portrait of `reference` (a picture or a folder of them) × every video of `driving` (a video or a
    folder of them), as rows with absolute paths."""
    references = _files(reference, IMAGE_SUFFIXES, "reference picture")
    videos = _files(driving, VIDEO_SUFFIXES, "driving video")
    n = 0
    for ref in references:
        for video in videos:
            n += 1
            yield Row(
                n,
                f"pair {n} ({os.path.basename(ref)} × {os.path.basename(video)})",
                {"reference": ref, "driving": video},
            )


def _files(path: str, suffixes: tuple[str, ...], what: str) -> list[str]:
    path = os.path.abspath(path)
    if os.path.isdir(path):
        found = [os.path.join(path, f) for f in sorted(os.listdir(path)) if f.lower().endswith(suffixes)]
        if not found:
            raise InputError(f"no {what} ({', '.join(suffixes)}) in folder {path}")
        return found
    if not os.path.isfile(path):
        raise InputError(f"{what} {path} not found")
    return [path]


# -- checking ------------------------------------------------------------------------------------------
class RowChecker:
    """Turns rows into entries: paths resolved against `base`, options typed and validated over the command
    line's (`given`), workflow inputs kept apart. `engine` "core" also requires an output file the core
    writes and the model fields (device, dtype, speed) to match the batch's. Duplicate outputs are the
    caller's to find (it sees every row)."""

    def __init__(self, base: str, given: Mapping[str, Any], engine: str = "core") -> None:
        self.base, self.given, self.engine = base, dict(given), engine
        self.fields = fields_of(StreamConfig)
        self.batch = StreamConfig.from_dict(self.given).to_dict()  # (the command line checks its flags itself)

    def check(self, row: Row) -> Entry:
        try:
            return self._check(row)
        except (InputError, ValueError) as e:
            return Entry(row.number, row.label, error=f"{row.label}: {e}")

    def _check(self, row: Row) -> Entry:
        values = dict(row.values)
        if "" in values:
            raise InputError(values[""])
        for key in ("reference", "driving"):
            if not isinstance(values.get(key), str) or not values[key]:
                raise InputError(f"no {key!r}: every row names a reference picture and a driving video")
        reference, driving = (self._path(values[k]) for k in ("reference", "driving"))
        if not os.path.isfile(reference):
            raise InputError(f"reference {reference} not found")
        if not os.path.exists(driving):
            raise InputError(f"driving video {driving} not found")
        if self.engine == "comfyui" and not os.path.isfile(driving):
            raise InputError(f"driving {driving}: the comfyui engine takes a video file (the workflow loads a video)")
        out = self._out(values.get("out"), reference, driving)
        inputs = {k: v for k, v in values.items() if "." in k and k not in PATH_KEYS}
        if inputs and self.engine != "comfyui":
            raise InputError(f"{next(iter(inputs))!r}: a workflow input (Node.input) needs --engine comfyui")
        options = {k: self._typed(k, v) for k, v in values.items() if k not in PATH_KEYS and k not in inputs}
        merged = {**self.given, **options}
        StreamConfig.from_dict(merged)
        if self.engine == "core":
            self._same_models(options)
        return Entry(row.number, row.label, reference, driving, out, merged, inputs)

    def _path(self, value: str) -> str:
        return os.path.normpath(os.path.join(self.base, os.path.expanduser(value)))

    def _out(self, value: Any, reference: str, driving: str) -> str:
        if value is None:
            stem = lambda p: os.path.splitext(os.path.basename(os.path.normpath(p)))[0]
            return f"{stem(reference)}__{stem(driving)}.mp4"
        if not isinstance(value, str) or os.path.basename(value) != value or value in (".", ".."):
            raise InputError(f"out {value!r}: a file name in the output folder, without folders")
        if value.startswith("."):
            raise InputError(f"out {value!r}: hidden names are the batch's temporary files; drop the leading dot")
        if self.engine == "core" and not value.lower().endswith(OUTPUT_SUFFIXES):
            raise InputError(f"out {value!r}: use a file ending in {', '.join(OUTPUT_SUFFIXES)}")
        return value

    def _typed(self, name: str, value: Any) -> Any:
        """A CSV cell (text) as the field's type; JSON values pass as they are (the config checks them)."""
        info: FieldInfo | None = self.fields.get(name)
        if info is None or not isinstance(value, str) or info.type is str:
            return value
        text = value.strip().lower()
        if info.spec.auto and text in ("auto", "none", "null"):
            return None
        if info.type is bool:
            if text in TRUE + FALSE:
                return text in TRUE
            raise ConfigError(name, f"{name} {value!r}: must be true or false")
        try:
            return info.type(text)
        except ValueError:
            raise ConfigError(
                name, f"{name} {value!r}: must be a {'whole ' if info.type is int else ''}number"
            ) from None

    def _same_models(self, options: Mapping[str, Any]) -> None:
        batch = self.batch
        for name in MODEL_FIELDS:
            if name in options and options[name] != batch[name]:
                raise ConfigError(
                    name,
                    f"{name} {options[name]!r}: the workers load their models once with the "
                    f"batch's {name} ({batch[name]!r}); give it on the command line "
                    f"(--{name.replace('_', '-')}) for the whole batch",
                )
