"""Export a trained nnU-Net v2 result folder as the shipped model folder (fp16, no optimizer).

The result is an ordinary nnU-Net v2 model folder::

    models/Dataset801_FaceEars/nnUNetTrainer__nnUNetPlans__3d_fullres/
        dataset.json  plans.json  fold_all/checkpoint_final.pth  model.onnx

The checkpoint names the stock ``nnUNetTrainer`` (the CPU training trainer only changes
the schedule and augmentation, not the network), so ``nnUNetv2_predict_from_modelfolder``
and ``nnUNetv2_train -pretrained_weights`` accept it as it is. ``model.onnx`` is the same
network for ONNX Runtime, which bids-deface runs on the CPU
(:func:`bids_deface.engine.export_onnx`).

Usage::

    python -m bids_deface.training.export --work cache --out models
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

import torch

from ..engine import export_onnx
from .train import CONFIG, DATASET_NAME, MIRROR_AXES, PLANS, cast_floats, result_dir

__all__ = ["export_model", "main"]

logger = logging.getLogger(__name__)

TRAINER = "nnUNetTrainer"


def export_model(result_dir: Path, out_root: Path, checkpoint: str = "checkpoint_final.pth") -> Path:
    """Write the fp16 model folder under ``out_root`` and return it."""
    result_dir = Path(result_dir)
    src = result_dir / "fold_all" / checkpoint
    if not src.exists():
        src = result_dir / "fold_all" / "checkpoint_latest.pth"
    ckpt = torch.load(src, map_location="cpu", weights_only=False)
    # the decoder's state holds the encoder's tensors again: each storage converted once
    weights = cast_floats(ckpt["network_weights"], torch.float16)
    slim = {
        "network_weights": weights,
        "trainer_name": TRAINER,
        "init_args": {"configuration": ckpt["init_args"]["configuration"], "fold": "all"},
        # stock nnUNetv2_predict mirrors along these axes unless told --disable_tta
        "inference_allowed_mirroring_axes": MIRROR_AXES,
        "current_epoch": ckpt.get("current_epoch"),
    }
    dest = Path(out_root) / DATASET_NAME / f"{TRAINER}__{PLANS}__{CONFIG}"
    (dest / "fold_all").mkdir(parents=True, exist_ok=True)
    torch.save(slim, dest / "fold_all" / "checkpoint_final.pth")
    for name in ("plans.json", "dataset.json", "dataset_fingerprint.json"):
        if (result_dir / name).exists():
            shutil.copy(result_dir / name, dest / name)
    export_onnx(dest)
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file()) / 1e6
    logger.info("exported %s (epoch %s) to %s: %.1f MB", src.name, slim["current_epoch"], dest, size)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Export the trained model folder (fp16).")
    parser.add_argument("--work", type=Path, default=Path("cache"))
    parser.add_argument("--out", type=Path, default=Path("models"))
    parser.add_argument("--checkpoint", default="checkpoint_final.pth")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    export_model(result_dir(args.work), args.out, args.checkpoint)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
