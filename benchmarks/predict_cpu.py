"""CPU prediction time for a 256×256×176 1 mm head (median of 3, two threads) and peak RSS.

Usage::

    python benchmarks/predict_cpu.py [--threads 2] [--repeats 3] [--markdown benchmarks/results.md]
    python benchmarks/predict_cpu.py --device cuda --markdown benchmarks/results_gpu.md

With ``--device cuda`` the network runs on the GPU (the rest of the mask step stays on the
CPU threads) and the table adds the GPU's name and its peak memory.

The image is the real held-out head (pycortex S1), cropped/padded to 256×256×176 at 1 mm.
Each prediction runs the whole mask step (nnU-Net prediction at the model's 3 mm, resampling to the
input grid, cleaning, brain guard); the I/O floor (read + write of the NIfTI) is timed beside it.
The same voxels with a 0.6 mm voxel size make a newborn-size head, which the model sees
twice (at 3 mm, then at the finer spacing its brain volume calls for): timed alike.
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def benchmark_image() -> nib.Nifti1Image:
    from bids_deface.training.fetch import fetch_all

    src = REPO / "cache" / "sources" / "pycortex_s1.nii.gz"
    if not src.exists():
        fetch_all(src.parent, only=["pycortex"])
    ras = nib.as_closest_canonical(nib.load(src))
    data = ras.get_fdata(dtype=np.float32)  # 256³ RAS
    x0 = (data.shape[0] - 176) // 2
    # a sagittal acquisition: 256×256 in-plane (A-P, I-S), 176 slices left to right
    sag = np.ascontiguousarray(np.transpose(data[x0:x0 + 176], (1, 2, 0)))
    affine = ras.affine[:, [1, 2, 0, 3]].copy()
    affine[:3, 3] = ras.affine[:3, 3] + ras.affine[:3, 0] * x0
    img = nib.Nifti1Image(sag.astype(np.int16), affine)
    img.set_qform(affine, 1)
    img.set_sform(affine, 1)
    return img


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = parser.parse_args(argv)
    from bids_deface.data import default_model_dir
    from bids_deface.deface import deface_image
    from bids_deface.io import load_nifti, save_raw_like
    from bids_deface.masking import FaceModel

    torch.set_num_threads(args.threads)
    img = benchmark_image()
    assert img.shape == (256, 256, 176), img.shape
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench_T1w.nii.gz"
        nib.save(img, path)
        t0 = time.perf_counter()
        img = load_nifti(path)
        np.asanyarray(img.dataobj)
        save_raw_like(np.asanyarray(img.dataobj.get_unscaled()), img, Path(tmp) / "copy.nii.gz")
        io_floor = time.perf_counter() - t0
        t0 = time.perf_counter()
        model = FaceModel(default_model_dir(), device=args.device, threads=args.threads)
        load_s = time.perf_counter() - t0
        times, ends, stages = [], [], []
        for _ in range(args.repeats):
            img = load_nifti(path)
            t0 = time.perf_counter()
            pred = model.predict(img)
            times.append(time.perf_counter() - t0)
            stages.append(pred.timings)
            save_raw_like(deface_image(img, pred.face), img, Path(tmp) / "defaced.nii.gz")
            ends.append(time.perf_counter() - t0)
        small = nib.Nifti1Image(np.asanyarray(img.dataobj), np.diag([0.6, 0.6, 0.6, 1.0]) @ img.affine)
        small_times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            small_pred = model.predict(small)
            small_times.append(time.perf_counter() - t0)
    processor = "CPU"
    if args.device == "cuda":
        processor = f"GPU {torch.cuda.get_device_name()}"
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows = [
        ("image", "256×256×176, 1 mm, int16 (real head, pycortex S1)"),
        ("machine", f"{platform.processor() or platform.machine()}, {args.threads} torch threads, {processor}"),
        ("model load (s)", f"{load_s:.2f}"),
        ("prediction, median of %d (s)" % args.repeats, f"{statistics.median(times):.2f}"),
        ("prediction, all runs (s)", ", ".join(f"{t:.2f}" for t in times)),
        ("of which the model: nnU-Net with its resampling, median (s)",
         f"{statistics.median(t['predict'] for t in stages):.2f}"),
        ("of which the ear zone, median (s)", f"{statistics.median(t['ears'] for t in stages):.2f}"),
        ("of which cleaning and brain guard, median (s)", f"{statistics.median(t['guard'] for t in stages):.2f}"),
        ("prediction + deface + write, median (s)", f"{statistics.median(ends):.2f}"),
        ("I/O floor: read + write .nii.gz (s)", f"{io_floor:.2f}"),
        ("newborn size (same voxels at 0.6 mm): model spacing (mm)",
         ", ".join(f"{v:.2f}" for v in small_pred.spacing_mm)),
        ("newborn size: prediction, median of %d (s)" % args.repeats, f"{statistics.median(small_times):.2f}"),
        ("peak RSS (MB)", f"{rss_mb:.0f}"),
    ]
    if args.device == "cuda":
        rows.append(("peak GPU memory (MB)", f"{torch.cuda.max_memory_allocated() / 2**20:.0f}"))
    table = "| measure | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    print(table)
    if args.markdown:
        args.markdown.write_text(
            f"# {'GPU' if args.device == 'cuda' else 'CPU'} prediction benchmark\n\n" + table
            + "\n\nRegenerate with `python benchmarks/predict_cpu.py "
            + ("--device cuda " if args.device == "cuda" else "")
            + f"--markdown {args.markdown.as_posix()}`.\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
