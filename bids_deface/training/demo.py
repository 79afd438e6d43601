"""Build the example BIDS dataset shipped in ``examples/ds-synthetic`` (synthetic heads).

Usage::

    python -m bids_deface.training.demo --labels cache/labels --out examples/ds-synthetic
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

import nibabel as nib

from .synth import load_source, render_head

__all__ = ["RUNS", "build", "main"]

logger = logging.getLogger(__name__)

#: (relative path, source head, contrast, voxel size, head scale)
RUNS = [
    ("sub-01/anat/sub-01_T1w.nii.gz", "pydeface_template", "T1w", (2.0, 2.0, 2.0), 1.0),
    ("sub-01/anat/sub-01_T2w.nii.gz", "pydeface_template", "T2w", (2.0, 2.0, 4.0), 1.0),
    ("sub-02/ses-01/anat/sub-02_ses-01_T1w.nii.gz", "colin27", "T1w", (2.0, 2.0, 2.0), 0.75),
    ("sub-02/ses-01/anat/sub-02_ses-01_FLAIR.nii.gz", "colin27", "FLAIR", (2.0, 2.0, 5.0), 0.75),
]

SIDECARS = {
    "T1w": {"RepetitionTime": 2.3, "EchoTime": 0.00298, "InversionTime": 0.9, "FlipAngle": 9},
    "T2w": {"RepetitionTime": 3.2, "EchoTime": 0.409, "FlipAngle": 120},
    "FLAIR": {"RepetitionTime": 9.0, "EchoTime": 0.081, "InversionTime": 2.5, "FlipAngle": 150},
}


def build(labels: Path, out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / "dataset_description.json").write_text(json.dumps({
        "Name": "bids-deface synthetic example",
        "BIDSVersion": "1.10.0",
        "DatasetType": "raw",
        "License": "CC0",
        "Authors": ["bids-deface developers"],
        "HowToAcknowledge": "Synthetic heads rendered from label maps by bids-deface; no real person is shown.",
    }, indent=2) + "\n")
    (out / "participants.tsv").write_text("participant_id\tage\nsub-01\t30\nsub-02\t7\n")
    (out / "README").write_text(
        "Synthetic example dataset of bids-deface: heads rendered from tissue label maps with\n"
        "T1w, T2w and FLAIR contrasts, an adult-size average head and a child-size (0.75) Colin27 head, thick\n"
        "slices in the T2w and FLAIR runs. Regenerate with\n"
        "`python -m bids_deface.training.demo --labels cache/labels --out examples/ds-synthetic`.\n")
    cache: dict[str, object] = {}
    for i, (rel, head, contrast, spacing, scale) in enumerate(RUNS):
        src = cache.setdefault(head, load_source(labels, head))
        img = render_head(src, contrast, spacing, scale, seed=i)  # type: ignore[arg-type]
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(img, path)
        sidecar = path.with_name(path.name.replace(".nii.gz", ".json"))
        sidecar.write_text(json.dumps(SIDECARS[contrast], indent=2) + "\n")
        logger.info("%s %s %.0f kB", rel, img.shape, path.stat().st_size / 1000)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=Path, default=Path("cache/labels"))
    parser.add_argument("--out", type=Path, default=Path("examples/ds-synthetic"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    build(args.labels, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
