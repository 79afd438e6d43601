"""Time and peak memory of ``bids-deface … participant`` on one image, from 1 mm down to the
finest isotropic grids (7 T), to show how both grow with the number of voxels.

Usage::

    python benchmarks/fine_grids.py [--threads 2] [--markdown benchmarks/fine_grids.md]

Each image is pycortex S1 (a real adult 1 mm T1w never used in training, as in
``benchmarks/speed.py``) resampled linearly onto an isotropic grid within the same 256×256×176
mm, stored as int16, alone in a one-subject dataset; the app runs once on it in a process of
its own (start, model load, the run, its QC verdict, sidecars and report), and its peak
memory is that process's high-water mark (``VmHWM``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed  # noqa: E402

#: (voxel side in mm, grid) within the 1 mm case's 256×256×176 mm.
GRIDS = ((1.0, (256, 256, 176)), (0.7, (365, 365, 251)), (0.5, (512, 512, 352)), (0.4, (640, 640, 440)))


def run_grid(side: float, shape: tuple[int, int, int], threads: int) -> dict:
    """One run of the app on the head resampled to ``shape`` voxels of ``side`` mm."""
    ras = speed.source_head()
    img = speed._resampled(ras, ras.get_fdata(dtype=np.float32), shape, (side, side, side))
    with tempfile.TemporaryDirectory() as tmp:
        app = speed.run_app(img, Path(tmp), threads)
    return {"side": side, "shape": list(shape), "voxels": int(np.prod(shape)), **app}


def table(rows: list[dict], threads: int) -> str:
    lines = [f"`bids-deface … participant` on one image, {threads} CPU threads, start and report included "
             "(`python benchmarks/fine_grids.py`):", "",
             "| grid | voxels (M) | time (s) | peak RSS (MiB) | time per M voxels (s) | exit code |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {'×'.join(map(str, r['shape']))} at {r['side']:g} mm | {r['voxels'] / 1e6:.1f} | "
                     f"{r['wall']:.1f} | {r['peak_mib']:.0f} | {r['wall'] / (r['voxels'] / 1e6):.2f} | {r['exit']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    rows = []
    for side, shape in GRIDS:
        rows.append(run_grid(side, shape, args.threads))
        print(f"{side} mm: {rows[-1]['wall']:.1f} s, {rows[-1]['peak_mib']:.0f} MiB", file=sys.stderr)
    text = table(rows, args.threads)
    print(text)
    if args.markdown:
        args.markdown.write_text("# Fine grids\n\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
