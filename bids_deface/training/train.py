"""Compact nnU-Net v2 plan, preprocessing and training of the face-and-ears model.

nnU-Net v2 reads its folders from ``nnUNet_raw``/``nnUNet_preprocessed``/``nnUNet_results``;
this command sets them from its explicit arguments before nnU-Net is imported, so
nothing needs to be exported in the shell.

Stages::

    python -m bids_deface.training.train plan  --work cache        # fingerprint, compact plan, preprocess
    python -m bids_deface.training.train fit   --work cache --epochs 40   # resumable
    python -m bids_deface.training.train speed --work cache        # seconds per iteration

The plan: 3d_fullres at ``--spacing`` mm isotropic (4 mm: an adult head fits
one 64³ patch), a 5-stage PlainConvUNet with features 16…128, batch 2. The synthetic data
are already randomised, so training uses no spatial augmentation beyond nnU-Net's patch
cropping, which keeps each iteration cheap on a CPU.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

__all__ = ["DATASET_ID", "DATASET_NAME", "set_nnunet_paths", "plan", "fit", "main"]

logger = logging.getLogger(__name__)

DATASET_ID = 801
DATASET_NAME = "Dataset801_FaceEars"
CONFIG = "3d_fullres"
PLANS = "nnUNetPlans"
MIRROR_AXES = (2,)
"""Axes along which test-time mirroring is valid, on nnU-Net's (z, y, x) arrays of images
reoriented to RAS: x, left-right only. The network only ever sees heads facing anterior and
upright, so a flip along y or z shows it a head it was never trained on."""


def set_nnunet_paths(work: Path) -> dict[str, Path]:
    """Point nnU-Net at ``work/nnunet_{raw,preprocessed,results}`` (before importing it)."""
    paths = {
        "nnUNet_raw": work / "nnunet_raw",
        "nnUNet_preprocessed": work / "nnunet_preprocessed",
        "nnUNet_results": work / "nnunet_results",
    }
    for key, value in paths.items():
        value.mkdir(parents=True, exist_ok=True)
        os.environ[key] = str(value.resolve())
    return paths


def compact_plans(plans: dict, spacing: float, patch: int, features: list[int], batch: int) -> dict:
    """Replace the 3d_fullres configuration of ``plans`` by the compact CPU-friendly one."""
    cfg = plans["configurations"][CONFIG]
    n_stages = len(features)
    cfg["spacing"] = [spacing] * 3
    cfg["patch_size"] = [patch] * 3
    cfg["batch_size"] = batch
    cfg["median_image_size_in_voxels"] = [patch] * 3
    arch = cfg["architecture"]["arch_kwargs"]
    arch["n_stages"] = n_stages
    arch["features_per_stage"] = list(features)
    arch["kernel_sizes"] = [[3, 3, 3]] * n_stages
    arch["strides"] = [[1, 1, 1]] + [[2, 2, 2]] * (n_stages - 1)
    arch["n_conv_per_stage"] = [2] * n_stages
    arch["n_conv_per_stage_decoder"] = [2] * (n_stages - 1)
    # keep only the configuration we train
    plans["configurations"] = {CONFIG: cfg}
    return plans


def plan(work: Path, spacing: float = 4.0, patch: int = 64,
         features: tuple[int, ...] = (16, 32, 64, 128, 128), batch: int = 2, processes: int = 2) -> Path:
    """Fingerprint, compact plan and preprocessing of the raw dataset in ``work/nnunet_raw``."""
    set_nnunet_paths(work)
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprint_dataset,
        plan_experiment_dataset,
        preprocess_dataset,
    )

    extract_fingerprint_dataset(DATASET_ID, num_processes=processes, check_dataset_integrity=False,
                                clean=True, verbose=False)
    plan_experiment_dataset(DATASET_ID)
    plans_file = work / "nnunet_preprocessed" / DATASET_NAME / f"{PLANS}.json"
    plans = json.loads(plans_file.read_text())
    plans = compact_plans(plans, spacing, patch, list(features), batch)
    plans_file.write_text(json.dumps(plans, indent=2))
    preprocess_dataset(DATASET_ID, PLANS, (CONFIG,), [processes], verbose=False, show_progress_bar=False)
    return plans_file


def _trainer_class():  # type: ignore[no-untyped-def]
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    class nnUNetTrainerFaceEarsCPU(nnUNetTrainer):
        """Short epochs, checkpoint every epoch, no spatial augmentation (the data are synthetic)."""

        def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                     device: torch.device = torch.device("cpu")) -> None:
            super().__init__(plans, configuration, fold, dataset_json, device)
            self.num_iterations_per_epoch = 50
            self.num_val_iterations_per_epoch = 5
            self.save_every = 1
            self.initial_lr = 1e-2

        def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):  # type: ignore[no-untyped-def]
            patch = self.configuration_manager.patch_size
            self.inference_allowed_mirroring_axes = MIRROR_AXES
            return (0.0, 0.0), False, list(patch), MIRROR_AXES

        def get_training_transforms(self, patch_size, rotation_for_DA, deep_supervision_scales,  # type: ignore[no-untyped-def]
                                    mirror_axes, do_dummy_2d_data_aug, use_mask_for_norm=None,
                                    is_cascaded=False, foreground_labels=None, regions=None,
                                    ignore_label=None):
            return nnUNetTrainer.get_validation_transforms(
                deep_supervision_scales, is_cascaded, foreground_labels, regions, ignore_label)

        def _do_i_compile(self) -> bool:
            # a network this small gains less from torch.compile than compiling costs
            return False

    return nnUNetTrainerFaceEarsCPU


def _make_trainer(work: Path, epochs: int, device: str, iterations: int = 50,  # type: ignore[no-untyped-def]
                  workers: int = 0):
    import torch

    set_nnunet_paths(work)
    # data-loading worker processes; 0 loads in the training process itself, which is
    # what 2 CPU cores want (a GPU machine with many cores gains from a few workers)
    os.environ["nnUNet_n_proc_DA"] = str(workers)
    pre = work / "nnunet_preprocessed" / DATASET_NAME
    plans = json.loads((pre / f"{PLANS}.json").read_text())
    dataset_json = json.loads((pre / "dataset.json").read_text())
    plans["continue_training"] = False
    cls = _trainer_class()
    trainer = cls(plans, CONFIG, "all", dataset_json, torch.device(device))
    trainer.num_epochs = epochs
    trainer.num_iterations_per_epoch = iterations
    trainer.num_val_iterations_per_epoch = max(1, iterations // 10)
    return trainer


def fit(work: Path, epochs: int, device: str = "cpu", threads: int = 2, iterations: int = 50,
        pretrained: Path | None = None, workers: int = 0) -> Path:
    """Train (or resume from the latest checkpoint) for ``epochs`` epochs of ``iterations``.

    ``pretrained``: a checkpoint (nnU-Net's, or an exported model's) whose network weights
    start a new run, e.g. the 4 mm model for a plan at a finer spacing (same architecture
    and labels). Ignored when the run resumes from its own checkpoint.
    """
    import torch

    torch.set_num_threads(threads)
    trainer = _make_trainer(work, epochs, device, iterations, workers)
    out = Path(trainer.output_folder)
    for name in ("checkpoint_latest.pth", "checkpoint_final.pth"):
        if (out / name).exists():
            trainer.load_checkpoint(str(out / name))
            logger.info("resuming from %s at epoch %d", name, trainer.current_epoch)
            break
    else:
        if pretrained is not None:
            trainer.initialize()
            # (fp16 weights of an exported model are cast to the network's dtype on loading)
            trainer.network.load_state_dict(
                torch.load(pretrained, map_location="cpu", weights_only=False)["network_weights"])
            logger.info("starting from the network weights of %s", pretrained)
    if trainer.current_epoch >= epochs:
        logger.info("already trained for %d epochs", trainer.current_epoch)
        return out
    trainer.run_training()
    return out


def speed(work: Path, iterations: int = 5, threads: int = 2) -> float:
    """Median seconds per training iteration (data loading included)."""
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    trainer = _make_trainer(work, 1, "cpu")
    trainer.on_train_start()
    trainer.network.train()
    times = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        trainer.train_step(next(trainer.dataloader_train))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=["plan", "fit", "speed"])
    parser.add_argument("--work", type=Path, default=Path("cache"))
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--spacing", type=float, default=4.0)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--features", type=int, nargs="+", default=[16, 32, 64, 128, 128])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=50, help="iterations per epoch")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0,
                        help="fit: data-loading worker processes (0: in the training process)")
    parser.add_argument("--pretrained", type=Path,
                        help="fit: start a new run from this checkpoint's network weights")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.stage == "plan":
        plan(args.work, args.spacing, args.patch, tuple(args.features), args.batch, args.threads)
    elif args.stage == "fit":
        fit(args.work, args.epochs, args.device, args.threads, args.iterations, args.pretrained,
            args.workers)
    else:
        logger.info("%.2f s per iteration", speed(args.work, threads=args.threads))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
