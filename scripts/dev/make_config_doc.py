#!/usr/bin/env python3
"""Write docs/CONFIG.md from the config's field metadata (personalive_core/config.py): every option with its
part, type, default, bounds or choices and help, and the presets. tests/test_docs.py checks that the file is
what this script writes, so the page never drifts from the code.

    .venv/bin/python scripts/dev/make_config_doc.py [--out docs/CONFIG.md]
"""

import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

HEADER = """# Options

Every option of a render, a live stream or a batch job is one field of `personalive_core.config.StreamConfig`,
validated when a config is made (a bad value is an error naming the field and what is allowed). The same name is
used everywhere: the ComfyUI input `head_pose`, the command-line flag `--head-pose`, the batch manifest column
`head_pose`, the live message key `head_pose`. Booleans take `--name` / `--no-name` on the command line; *auto*
(empty default) is decided for the machine (`SpeedOptions.resolve`).

This page is generated from the code by `scripts/dev/make_config_doc.py`.

"""


def bounds(info):
    spec = info.spec
    if spec.choices:
        return " \\| ".join(f"`{c}`" for c in spec.choices)
    if spec.min is not None or spec.max is not None:
        lo = "" if spec.min is None else f"{spec.min:g}" if isinstance(spec.min, float) else str(spec.min)
        hi = "" if spec.max is None else f"{spec.max:g}" if isinstance(spec.max, float) else str(spec.max)
        return f"{lo} – {hi}"
    return ""


def default(value):
    return "auto" if value is None else f"`{str(value).lower() if isinstance(value, bool) else value}`"


def render():
    sys.path.insert(0, REPO)
    from personalive_core.config import PRESETS, StreamConfig, fields_of

    lines = [
        HEADER.rstrip(),
        "",
        "| option | part | type | default | allowed | what it does |",
        "|---|---|---|---|---|---|",
    ]
    for name, info in fields_of(StreamConfig).items():
        help_text = info.spec.help.replace("|", "\\|")
        lines.append(
            f"| `{name}` | {info.part or '—'} | {info.type.__name__} | {default(info.default)} | "
            f"{bounds(info)} | {help_text} |"
        )
    lines += ["", "## Presets", "", "Front ends that want other defaults use a named preset, never a copy:", ""]
    base = StreamConfig().to_dict()
    for preset, config in PRESETS.items():
        changed = {k: v for k, v in config.to_dict().items() if base[k] != v}
        shown = ", ".join(f"`{k}` = {default(v)}" for k, v in changed.items()) or "the defaults above"
        lines.append(f"- `{preset}`: {shown}")
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.path.join(REPO, "docs", "CONFIG.md"))
    args = p.parse_args()
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(render())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
