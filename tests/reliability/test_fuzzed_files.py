"""Random damage to valid files (bit flips, cuts, zeroed blocks): read cleanly or refuse cleanly.

A flipped bit inside the voxel data leaves a valid volume, so unlike the hand-made corpus a fuzzed
file may be accepted; what is never allowed is a traceback, an internal error (exit 1), a crash,
or library noise on stderr.
"""

from __future__ import annotations

import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from napari_ssl_seg._reader import napari_get_reader, read_layers
from napari_ssl_seg.cli import main
from napari_ssl_seg.errors import InputError
from napari_ssl_seg.io import Volume, write_volume
from reliability.dicom_corpus import ramp, write_series
from reliability.tally import TALLY


def _templates(folder: Path) -> dict[str, Path]:
    rng = np.random.default_rng(4)
    volume = Volume(array=rng.normal(size=(5, 7, 9)).astype(np.float32), spacing=(2.0, 0.9, 0.8))
    templates = {suffix: write_volume(volume, folder / f"template{suffix}") for suffix in (".nii.gz", ".nii", ".mha")}
    raw = folder / "template_raw.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(volume.array), str(raw), useCompression=False)
    templates[".nrrd raw"] = raw
    templates[".nrrd gzip"] = write_volume(volume, folder / "template.nrrd")
    templates["DICOM slice"] = write_series(folder / "dicom", ramp((4, 8, 8)))[1]
    return templates


Mutation = Callable[[bytearray, random.Random], bytearray]


def _flip_bits(data: bytearray, rng: random.Random) -> bytearray:
    for _ in range(rng.randint(1, 8)):
        position = rng.randrange(len(data))
        data[position] ^= 1 << rng.randrange(8)
    return data


def _flip_header_bits(data: bytearray, rng: random.Random) -> bytearray:
    for _ in range(rng.randint(1, 3)):
        position = rng.randrange(min(len(data), 400))
        data[position] ^= 1 << rng.randrange(8)
    return data


def _cut(data: bytearray, rng: random.Random) -> bytearray:
    return data[: rng.randrange(1, len(data))]


def _zero_block(data: bytearray, rng: random.Random) -> bytearray:
    start = rng.randrange(len(data))
    end = min(len(data), start + rng.randint(1, 64))
    data[start:end] = bytes(end - start)
    return data


MUTATIONS: tuple[Mutation, ...] = (_flip_bits, _flip_header_bits, _cut, _zero_block)


def _problem(status: int, out: str, err: str) -> str | None:
    if "Traceback" in out + err:
        return "traceback"
    lines = [line for line in re.split(r"[\r\n]", err) if line.strip()]
    if status == 2:
        ok = len(lines) == 1 and lines[0].startswith("error: ")
    else:
        ok = status == 0 and "shape" in out and all(line.startswith("warning: ") for line in lines)
    return None if ok else f"exit {status}, stderr {err[-300:]!r}"


def _reader_problem(path: Path) -> str | None:
    reader = napari_get_reader(str(path))
    if reader is None:
        return None
    try:
        read_layers(str(path))
    except InputError as exc:
        return None if str(exc) and "\n" not in str(exc) else f"unclear message {exc!r}"
    except Exception as exc:
        return f"reader raised {type(exc).__name__}: {exc}"
    return None


@pytest.mark.slow
def test_fuzzed_files_are_read_or_refused_cleanly(
    tmp_path: Path, full: bool, capfd: pytest.CaptureFixture[str]
) -> None:
    per_template = 60 if full else 6
    (tmp_path / "templates").mkdir()
    templates = _templates(tmp_path / "templates")
    rng = random.Random(20261121)
    problems = []
    for kind, template in templates.items():
        original = bytearray(template.read_bytes())
        for index in range(per_template):
            mutation = MUTATIONS[index % len(MUTATIONS)]
            damaged = mutation(bytearray(original), rng)
            if kind == "DICOM slice":  # damage one slice of a whole series
                folder = tmp_path / "fuzz" / f"dicom{index}"
                shutil.copytree(template.parent, folder)
                target = folder / template.name
                target.write_bytes(bytes(damaged))
                path = folder
            else:
                path = tmp_path / "fuzz" / f"{index}-{template.name}"
                path.parent.mkdir(exist_ok=True)
                path.write_bytes(bytes(damaged))
            capfd.readouterr()
            status = main(["info", str(path)])
            out, err = capfd.readouterr()
            problem = _problem(status, out, err) or _reader_problem(path)
            TALLY["fuzzed"] += 1
            if problem:
                problems.append(f"{kind} #{index} ({mutation.__name__}): {problem}")
    assert not problems, "\n".join(problems)
