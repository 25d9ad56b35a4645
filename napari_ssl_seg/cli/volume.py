"""``info``: a volume's geometry, type and value range."""

from __future__ import annotations

import argparse
import json

from napari_ssl_seg.cli.support import EXIT_OK, print_notes


def _format_number(value: float) -> str:
    return f"{value:.6g}"


def command_info(args: argparse.Namespace) -> int:
    from napari_ssl_seg.io import read_volume

    volume = read_volume(args.path)
    print_notes(volume.notes)
    info = volume.geometry_dict()
    if args.json:
        print(json.dumps(info))
        return EXIT_OK
    direction = info["direction"]
    rows = [" ".join(_format_number(v) for v in direction[i : i + 3]) for i in (0, 3, 6)]
    lines = [
        ("file", f"{args.path} ({info['format']})"),
        ("shape", " x ".join(str(n) for n in info["shape"]) + "  (z, y, x)"),
        ("spacing", " x ".join(_format_number(s) for s in info["spacing"]) + " mm  (z, y, x)"),
        ("origin", ", ".join(_format_number(o) for o in info["origin"]) + " mm  (LPS x, y, z)"),
        ("direction", " | ".join(rows) + "  (ITK, row-major)"),
        ("dtype", info["dtype"]),
        ("range", f"{_format_number(info['min'])} .. {_format_number(info['max'])}"),
    ]
    if volume.modality:
        lines.append(("modality", volume.modality))
    if volume.label_names:
        lines.append(("labels", ", ".join(f"{value}={name}" for value, name in sorted(volume.label_names.items()))))
    for key, value in lines:
        print(f"{key:<10} {value}")
    return EXIT_OK
