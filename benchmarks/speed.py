"""Speed of bids-deface per stage, on three grids and a 20-image dataset, beside the I/O
floor and a peer defacer, all in one run. Writes a Markdown table.

Usage::

    python benchmarks/speed.py [--threads 2] [--repeats 3] [--markdown docs/performance.md]
    python benchmarks/speed.py --device cuda --threads 2 --markdown docs/performance.md

``--markdown`` writes the table into the file between the lines ``<!-- speed: cpu -->`` (or
``gpu``) and ``<!-- /speed -->``, or, where the file has no such lines, as the whole file.

Images (all made from the real head pycortex S1, 1 mm, never used in training):

* ``1 mm``: 256×256×176 at 1 mm, stored sagittally (int16);
* ``clinical 0.4 mm``: 512×512×120 at 0.41×0.41×1.5 mm, axial (linear resampling);
* ``5 mm axial``: 256×256×51 at 1×1×5 mm (5-slice averages: thick slices' partial volume);
* ``clinical 0.34×0.52×4 mm``: 600×400×45, axial, rectangular in-plane pixels in thick
  slices (two axes longer than the finest: the brain guard's hardest grid; linear resampling);
* ``dataset``: 20 subjects, each the 1 mm image, through ``bids-deface … participant``
  (one process: model loaded once, reports included), and again with ``--jobs`` (default 2)
  worker processes sharing the threads.

Each image case runs in a fresh process (its peak RSS is its own): the stages of one
participant run as the app does them (read, conform, network, resample back, input kind,
clean, ears, guard, apply, then the QC verdict beside the writing and the figures, report),
median of ``--repeats`` runs after one warm-up; the I/O floor (read + write of the same ``.nii.gz``) and quickshear 1.2 (PyPI;
given the model's brain mask, its own read and write included) are timed in the same process.
That process's peak RSS also holds the benchmark's own arrays (the case image it made, the
previous run's outputs, quickshear); the app's own peak on the image is measured apart: the
same image as a one-subject dataset through ``bids-deface … participant`` in a process of its
own (start, model load, run, sidecars, report).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
CASES = ("1 mm", "clinical 0.4 mm", "5 mm axial", "clinical 0.34×0.52×4 mm")
STAGES = ("read", "conform", "network", "resample_back", "input_kind", "pose", "clean", "ears", "guard",
          "apply", "beside", "report")
#: The stages that run side by side in ``beside`` (the verdict in one thread, the writing
#: and drawing in another: :func:`bids_deface.pipeline.judge_and_write`), each timed as it ran.
BESIDE = ("qc", "write", "figures")
LABELS = {"beside": "QC verdict beside writing and figures", "qc": "· QC verdict", "write": "· write",
          "figures": "· figures"}


def source_head() -> nib.Nifti1Image:
    """pycortex S1 in RAS (256³ at 1 mm), fetched into ``cache/sources`` if missing."""
    from bids_deface.training.fetch import fetch_all

    src = REPO / "cache" / "sources" / "pycortex_s1.nii.gz"
    if not src.exists():
        fetch_all(src.parent, only=["pycortex"])
    return nib.as_closest_canonical(nib.load(src))


def case_image(name: str) -> nib.Nifti1Image:
    """The benchmark image of case ``name`` (see the module docstring)."""
    ras = source_head()
    data = ras.get_fdata(dtype=np.float32)
    if name == "1 mm":
        x0 = (data.shape[0] - 176) // 2
        # a sagittal acquisition: 256×256 in-plane (A-P, I-S), 176 slices left to right
        sag = np.ascontiguousarray(np.transpose(data[x0:x0 + 176], (1, 2, 0)))
        affine = ras.affine[:, [1, 2, 0, 3]].copy()
        affine[:3, 3] = ras.affine[:3, 3] + ras.affine[:3, 0] * x0
        return _image(sag, affine)
    if name == "clinical 0.4 mm":
        return _resampled(ras, data, (512, 512, 120), (0.41, 0.41, 1.5))
    if name == "clinical 0.34×0.52×4 mm":
        return _resampled(ras, data, (600, 400, 45), (0.34, 0.52, 4.0))
    if name == "5 mm axial":
        n = data.shape[2] // 5
        slabs = data[:, :, : n * 5].reshape(data.shape[0], data.shape[1], n, 5).mean(-1)
        affine = ras.affine @ np.diag([1.0, 1.0, 5.0, 1.0])
        affine[:3, 3] = (ras.affine @ np.r_[0.0, 0.0, 2.0, 1.0])[:3]
        return _image(slabs, affine)
    raise ValueError(name)


def _resampled(ras: nib.Nifti1Image, data: np.ndarray, shape: tuple[int, int, int],
               zooms: tuple[float, float, float]) -> nib.Nifti1Image:
    """The 1 mm head ``data`` (RAS) resampled linearly onto ``shape`` voxels of ``zooms``
    mm around the head's centre."""
    import torch

    extent = np.asarray(shape) * zooms
    if np.any(np.ceil(extent) > data.shape):
        raise ValueError(f"{shape} voxels of {zooms} mm reach beyond the source head's {data.shape} mm")
    lo = np.floor((np.asarray(data.shape) - extent) / 2).astype(int)
    sub = data[tuple(slice(int(a), int(a + np.ceil(e))) for a, e in zip(lo, extent))]
    x = torch.from_numpy(np.ascontiguousarray(sub))[None, None]
    out = torch.nn.functional.interpolate(x, size=list(shape), mode="trilinear", align_corners=False)[0, 0]
    # new voxel i lies at old index lo + (i + 0.5) × scale - 0.5 (linear, align_corners=False)
    scale = np.asarray(sub.shape, float) / shape
    grid = np.diag([*scale, 1.0])
    grid[:3, 3] = lo + 0.5 * scale - 0.5
    return _image(out.numpy(), ras.affine @ grid)


def _image(data: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    img = nib.Nifti1Image(np.round(data).astype(np.int16), affine)
    img.set_qform(affine, 1)
    img.set_sform(affine, 1)
    return img


def run_case(name: str, threads: int, repeats: int, device: str) -> dict:
    """Time one image case in this process (see the module docstring)."""
    from bids_deface.data import default_model_dir
    from bids_deface.deface import deface_image
    from bids_deface.io import held_in_memory, load_nifti, save_raw_like
    from bids_deface.masking import FaceModel
    from bids_deface.pipeline import judge_and_write, small_enough
    from bids_deface.reports.core import ReportRun, render_template, subject_context

    img = case_image(name)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = tmp / "sub-01_T1w.nii.gz"
        nib.save(img, path)
        model = FaceModel(default_model_dir(), device=device, threads=threads)
        io_floor, runs, quick, beside = [], [], [], []
        for _ in range(repeats + 1):
            t0 = time.perf_counter()
            src = load_nifti(path)
            np.asanyarray(src.dataobj)
            save_raw_like(np.asanyarray(src.dataobj.get_unscaled()), src, tmp / "copy.nii.gz")
            io_floor.append(time.perf_counter() - t0)

            stages: dict[str, float] = {}
            t0 = time.perf_counter()
            src = load_nifti(path)
            if small_enough(src.shape):  # as a run reads it
                src = held_in_memory(src)
            np.asanyarray(src.dataobj)
            stages["read"] = time.perf_counter() - t0
            pred = model.predict(src)
            stages.update(pred.timings)
            t0 = time.perf_counter()
            raw = deface_image(src, pred.face)
            stages["apply"] = time.perf_counter() - t0
            defaced, mask = tmp / "sub-01_desc-defaced_T1w.nii.gz", tmp / "sub-01_desc-face_mask.nii.gz"
            judged = judge_and_write(model, src, raw, pred, defaced, mask)
            stages["beside"] = judged.seconds["together"]
            beside.append({k: judged.seconds[k] for k in BESIDE})
            figures = judged.figures
            t0 = time.perf_counter()
            run = ReportRun(name=path.name, source=path, defaced=defaced, mask=mask, status="ok")
            (tmp / "sub-01.html").write_text(render_template("subject.html.j2",
                                                             subject_context("01", [run], [figures])))
            stages["report"] = time.perf_counter() - t0
            runs.append(stages)
            quick.append(_quickshear(path, pred.brain, src, tmp))
        runs, io_floor, quick, beside = runs[1:], io_floor[1:], quick[1:], beside[1:]
        app_rss = _app_rss(img, tmp, threads, device)
    total = [sum(r.values()) for r in runs]
    return {
        "case": name,
        "shape": list(img.shape),
        "zooms": [round(float(z), 3) for z in img.header.get_zooms()[:3]],
        "voxels": int(np.prod(img.shape)),
        "stages": {**{s: statistics.median(r.get(s, 0.0) for r in runs) for s in STAGES},
                   **{s: statistics.median(r[s] for r in beside) for s in BESIDE}},
        "total": statistics.median(total),
        "totals": total,
        "io_floor": statistics.median(io_floor),
        "quickshear": statistics.median(quick),
        "model_load": None,
        "backend": model._network.backend,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "app_rss_mb": app_rss,
    }


def _dataset_of(img: nib.Nifti1Image, root: Path, subjects: int = 1) -> Path:
    """A raw BIDS dataset at ``root`` whose ``subjects`` subjects each hold ``img`` as their T1w."""
    root.mkdir()
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "speed", "BIDSVersion": "1.9.0", "Authors": ["A", "B"]}))
    for i in range(1, subjects + 1):
        anat = root / f"sub-{i:02d}" / "anat"
        anat.mkdir(parents=True)
        nib.save(img, anat / f"sub-{i:02d}_T1w.nii.gz")
    return root


#: Runs ``bids-deface`` with the arguments given, then prints its process's peak RSS in kB
#: (``VmHWM``: that of the process's own memory since it started the interpreter; a child's
#: ``ru_maxrss`` would also count its parent's memory at the fork).
_PEAK_OF_APP = (
    "import sys\n"
    "from bids_deface.cli.run import main\n"
    "code = main(sys.argv[1:])\n"
    "peak = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0].split()[1]\n"
    "print('peak-kB', peak, 'exit', code)\n"
)


def run_app(img: nib.Nifti1Image, tmp: Path, threads: int, device: str | None = None) -> dict:
    """``bids-deface … participant`` on ``img`` as a one-subject dataset in ``tmp``, in a
    process of its own (``device``: the app's default when None): its wall time, exit code
    and peak RSS in MiB."""
    root = _dataset_of(img, tmp / "app-ds")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _PEAK_OF_APP, str(root), str(tmp / "app-out"),
                          "participant", "--nprocs", str(threads), *(["--device", device] if device else []),
                          "--skip-bids-validation", "--no-progress"], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    words = out.stdout.split()
    if "peak-kB" not in words:
        raise RuntimeError(f"bids-deface stopped on the benchmark image: {out.stdout[-500:]} {out.stderr[-2000:]}")
    return {"wall": wall, "exit": int(words[words.index("exit") + 1]),
            "peak_mib": int(words[words.index("peak-kB") + 1]) / 1024}


def _app_rss(img: nib.Nifti1Image, tmp: Path, threads: int, device: str) -> float:
    """Peak RSS in MiB of the app on ``img`` alone (:func:`run_app`), which must finish."""
    app = run_app(img, tmp, threads, device)
    if app["exit"] not in (0, 7):
        raise RuntimeError(f"bids-deface exited with {app['exit']} on the benchmark image")
    return app["peak_mib"]


def _quickshear(path: Path, brain: np.ndarray, src: nib.Nifti1Image, tmp: Path) -> float:
    """quickshear with the model's brain mask: read, shear, write (its own code)."""
    import quickshear

    mask_path = tmp / "brain.nii.gz"
    nib.save(nib.Nifti1Image(brain.astype(np.uint8), src.affine), mask_path)
    t0 = time.perf_counter()
    out = quickshear.quickshear(nib.load(path), nib.load(mask_path))
    nib.save(out, tmp / "quickshear.nii.gz")
    return time.perf_counter() - t0


def run_dataset(threads: int, device: str, subjects: int = 20, jobs: int = 1) -> dict:
    """``bids-deface … participant --jobs jobs`` on ``subjects`` copies of the 1 mm image,
    in this process (with ``jobs`` > 1 the runs go to that many worker processes, which
    share the ``threads``)."""
    from bids_deface.cli.run import main

    img = case_image("1 mm")
    with tempfile.TemporaryDirectory() as tmp:
        root = _dataset_of(img, Path(tmp) / "ds", subjects)
        t0 = time.perf_counter()
        code = main([str(root), str(Path(tmp) / "out"), "participant", "--nprocs", str(threads),
                     "--jobs", str(jobs), "--device", device, "--skip-bids-validation", "--no-progress"])
        wall = time.perf_counter() - t0
    # the workers' peak: the largest of the finished child processes
    return {"case": "dataset", "subjects": subjects, "jobs": jobs, "exit": code, "wall": wall,
            "per_image": wall / subjects, "images_per_s": subjects / wall,
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "worker_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 if jobs > 1 else None}


def _child(args: list[str], threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, __file__, *args], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(results: list[dict], threads: int, device: str) -> str:
    import torch

    cases = [r for r in results if r["case"] != "dataset"]
    lines = ["| stage (s, median) | " + " | ".join(r["case"] for r in cases) + " |",
             "|---" * (len(cases) + 1) + "|"]
    lines.append("| grid | " + " | ".join(
        "×".join(map(str, r["shape"])) + " at " + "×".join(f"{z:g}" for z in r["zooms"]) + " mm" for r in cases) + " |")
    for stage in [s for stage in STAGES for s in ((stage, *BESIDE) if stage == "beside" else (stage,))]:
        label = LABELS.get(stage, stage.replace("_", " "))
        lines.append(f"| {label} | " + " | ".join(f"{r['stages'][stage]:.2f}" for r in cases) + " |")
    lines.append("| **total, end to end** | " + " | ".join(f"**{r['total']:.2f}**" for r in cases) + " |")
    lines.append("| all runs | " + " | ".join(", ".join(f"{t:.2f}" for t in r["totals"]) for r in cases) + " |")
    lines.append("| I/O floor: read + write .nii.gz | " + " | ".join(f"{r['io_floor']:.2f}" for r in cases) + " |")
    lines.append("| total / I/O floor | " + " | ".join(f"{r['total'] / r['io_floor']:.1f}×" for r in cases) + " |")
    lines.append("| quickshear 1.2 (given a brain mask) | " + " | ".join(f"{r['quickshear']:.2f}" for r in cases) + " |")
    lines.append("| total / quickshear | " + " | ".join(f"{r['total'] / r['quickshear']:.1f}×" for r in cases) + " |")
    lines.append("| peak RSS, `bids-deface … participant` on the image alone (MiB) | "
                 + " | ".join(f"{r['app_rss_mb']:.0f}" for r in cases) + " |")
    lines.append("| peak RSS of this benchmark's process (MiB) | " + " | ".join(f"{r['rss_mb']:.0f}" for r in cases) + " |")
    datasets = [r for r in results if r["case"] == "dataset"]
    machine = (f"{platform.machine()}, {os.cpu_count()} CPUs ({platform.processor() or 'unknown CPU'}), "
               f"{threads} threads, network in {cases[0]['backend']}")
    if device == "cuda":
        machine += f", GPU {torch.cuda.get_device_name()}"
    text = f"Machine: {machine}; Python {platform.python_version()}, torch {torch.__version__}.\n\n"
    text += "\n".join(lines) + "\n"
    for ds in datasets:
        jobs = ds.get("jobs", 1)
        how = ("one process: start, model load, every run, every report" if jobs == 1 else
               f"`--jobs {jobs}`: {jobs} worker processes of {max(1, threads // jobs)} thread(s) each, "
               "runs and reports shared among them")
        rss = (f"peak RSS {ds['rss_mb']:.0f} MiB" if jobs == 1 else
               f"peak RSS {ds['rss_mb']:.0f} MiB in the first process, {ds['worker_rss_mb']:.0f} MiB in a worker")
        text += (f"\nDataset of {ds['subjects']} 1 mm images through `bids-deface … participant` "
                 f"({how}): **{ds['wall']:.1f} s**, {ds['per_image']:.2f} s per image, "
                 f"{ds['images_per_s']:.2f} images/s, {rss} (exit code {ds['exit']}).\n")
    return text


def write_table(path: Path, text: str, device: str) -> None:
    """Put ``text`` between the markers of ``device`` in ``path`` (see the module docstring)."""
    start, end = f"<!-- speed: {'gpu' if device == 'cuda' else 'cpu'} -->", "<!-- /speed -->"
    page = path.read_text() if path.exists() else ""
    if start in page:
        head, rest = page.split(start, 1)
        tail = rest.split(end, 1)[1] if end in rest else ""
        page = f"{head}{start}\n{text}{end}{tail}"
    else:
        page = text
    path.write_text(page)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--dataset", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--subjects", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=2,
                        help="the dataset is also run with this many --jobs (1: once, one process)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    if args.case:
        print(json.dumps(run_case(args.case, args.threads, args.repeats, args.device)))
        return 0
    if args.dataset:
        print(json.dumps(run_dataset(args.threads, args.device, args.subjects, args.jobs)))
        return 0
    common = ["--threads", str(args.threads), "--repeats", str(args.repeats), "--device", args.device]
    results = []
    for case in CASES:
        results.append(_child([*common, "--case", case], args.threads))
        print(f"{case}: {results[-1]['total']:.2f} s", file=sys.stderr)
    for jobs in sorted({1, args.jobs}):
        results.append(_child([*common, "--dataset", "--subjects", str(args.subjects), "--jobs", str(jobs)],
                              args.threads))
        print(f"dataset, --jobs {jobs}: {results[-1]['wall']:.1f} s", file=sys.stderr)
    text = table(results, args.threads, args.device)
    print(text)
    if args.markdown:
        write_table(args.markdown, text, args.device)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
