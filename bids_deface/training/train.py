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

__all__ = ["DATASET_ID", "DATASET_NAME", "set_nnunet_paths", "plan", "fit", "result_dir", "stash", "unstash",
           "cast_floats",
           "main"]

logger = logging.getLogger(__name__)

DATASET_ID = 801
DATASET_NAME = "Dataset801_FaceEars"
CONFIG = "3d_fullres"
PLANS = "nnUNetPlans"
TRAINER = "nnUNetTrainerFaceEarsCPU"
#: Files of a stash (:func:`stash`): the training state, the plan it was trained on, a summary.
STASH_CHECKPOINT = "checkpoint.pth"
STASH_PLANS = "plans.json"
STASH_PROGRESS = "progress.json"
#: Seconds between two stashes during training (the last epoch is always stashed).
STASH_EVERY_S = 1800.0
#: Initial learning rate of nnU-Net's poly schedule (its default).
INITIAL_LR = 1e-2
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


def result_dir(work: Path) -> Path:
    """nnU-Net's result folder of a training run in ``work`` (checkpoints under ``fold_all``)."""
    return Path(work) / "nnunet_results" / DATASET_NAME / f"{TRAINER}__{PLANS}__{CONFIG}"


def cast_floats(obj, dtype, _done: dict | None = None):  # type: ignore[no-untyped-def]
    """``obj`` (nested dicts, lists and tensors) with every floating tensor of another
    floating dtype cast to ``dtype``; tensors that shared memory (the decoder's state
    holds the encoder's tensors again) share it still, so each is saved once."""
    import torch

    done = {} if _done is None else _done
    if isinstance(obj, torch.Tensor):
        if not obj.is_floating_point() or obj.dtype == dtype:
            return obj
        key = (obj.untyped_storage().data_ptr(), obj.storage_offset(), tuple(obj.shape), tuple(obj.stride()))
        if key not in done:
            done[key] = obj.to(dtype)
        return done[key]
    if isinstance(obj, dict):
        return {k: cast_floats(v, dtype, done) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(cast_floats(v, dtype, done) for v in obj)
    return obj


def stash(work: Path, dest: Path) -> int:
    """Keep the latest training state of ``work`` in ``dest``, small enough to commit, so
    that a run goes on from it on another machine (:func:`unstash`): the checkpoint with
    its network weights and optimizer momentum stored as float16 (half the size; training
    goes on in float32 from the rounded values), the plan the run was trained on and a
    summary. Written atomically; returns the epoch stashed (0: nothing to stash)."""
    import torch

    folder = result_dir(work) / "fold_all"
    src = next((folder / n for n in ("checkpoint_final.pth", "checkpoint_latest.pth") if (folder / n).is_file()), None)
    if src is None:
        return 0
    ckpt = torch.load(src, map_location="cpu", weights_only=False)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    log = ckpt.get("logging", {})
    dice = [[round(float(v), 4) for v in row] for row in log.get("dice_per_class_or_region", [])[-1:]]
    progress = {
        "epoch": int(ckpt["current_epoch"]),
        "finished": src.name == "checkpoint_final.pth",
        "train_loss_last": round(float(log["train_losses"][-1]), 4) if log.get("train_losses") else None,
        "pseudo_dice_last": dice[0] if dice else None,
        "stashed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    for name, write in ((STASH_CHECKPOINT, lambda p: torch.save(cast_floats(ckpt, torch.float16), p)),
                        (STASH_PLANS, lambda p: p.write_text((result_dir(work) / "plans.json").read_text())),
                        (STASH_PROGRESS, lambda p: p.write_text(json.dumps(progress, indent=1) + "\n"))):
        tmp = dest / f".{name}.tmp"
        write(tmp)
        os.replace(tmp, dest / name)
    logger.info("stashed epoch %d of %s in %s", progress["epoch"], work, dest)
    return progress["epoch"]


def unstash(work: Path, src: Path) -> int:
    """Put the training state stashed in ``src`` (:func:`stash`) into ``work``'s result
    folder as ``checkpoint_latest.pth`` (float32), unless ``work`` has a checkpoint of its
    own. Returns the epoch it resumes from (0: nothing put there)."""
    import torch

    folder = result_dir(work) / "fold_all"
    if not (Path(src) / STASH_CHECKPOINT).is_file() or any(
            (folder / n).is_file() for n in ("checkpoint_final.pth", "checkpoint_latest.pth")):
        return 0
    ckpt = cast_floats(torch.load(Path(src) / STASH_CHECKPOINT, map_location="cpu", weights_only=False),
                        torch.float32)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, folder / ".checkpoint_latest.pth.tmp")
    os.replace(folder / ".checkpoint_latest.pth.tmp", folder / "checkpoint_latest.pth")
    logger.info("resuming %s from the state stashed in %s (epoch %d)", work, src, ckpt["current_epoch"])
    return int(ckpt["current_epoch"])


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
         features: tuple[int, ...] = (16, 32, 64, 128, 128), batch: int = 2, processes: int = 2,
         plans_from: Path | None = None) -> Path:
    """Fingerprint, compact plan and preprocessing of the raw dataset in ``work/nnunet_raw``.

    ``plans_from``: a plans file (a stash's, :func:`stash`) to preprocess with instead of
    planning anew, so that a run resumed on another machine trains on the data it began with.
    """
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
    if plans_from is not None:
        plans = json.loads(Path(plans_from).read_text())
        logger.info("preprocessing with the plan of %s", plans_from)
    else:
        plans = compact_plans(json.loads(plans_file.read_text()), spacing, patch, list(features), batch)
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
            self.initial_lr = INITIAL_LR

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

        stash_dir: Path | None = None
        work: Path | None = None
        _stashed_at = float("-inf")

        def save_checkpoint(self, filename: str) -> None:
            super().save_checkpoint(filename)
            final = filename.endswith("checkpoint_final.pth")
            if self.stash_dir is not None and self.work is not None and (
                    final or time.monotonic() - self._stashed_at >= STASH_EVERY_S):
                stash(self.work, self.stash_dir)
                self._stashed_at = time.monotonic()

    return nnUNetTrainerFaceEarsCPU


def _make_trainer(work: Path, epochs: int, device: str, iterations: int = 50,  # type: ignore[no-untyped-def]
                  workers: int = 0, lr: float = INITIAL_LR):
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
    trainer.initial_lr = lr
    trainer.num_iterations_per_epoch = iterations
    trainer.num_val_iterations_per_epoch = max(1, iterations // 10)
    return trainer


def fit(work: Path, epochs: int, device: str = "cpu", threads: int = 2, iterations: int = 50,
        pretrained: Path | None = None, workers: int = 0, stash_dir: Path | None = None,
        lr: float = INITIAL_LR) -> Path:
    """Train (or resume from the latest checkpoint) for ``epochs`` epochs of ``iterations``.

    ``pretrained``: a checkpoint (nnU-Net's, or an exported model's) whose network weights
    start a new run, e.g. the 4 mm model for a plan at a finer spacing (same architecture
    and labels). Ignored when the run resumes from its own checkpoint.
    ``lr``: the initial learning rate of the poly schedule (give the same one when resuming:
    the schedule recomputes the rate from it every epoch).
    ``stash_dir``: resume from the state stashed there when ``work`` has no checkpoint
    (:func:`unstash`), and stash the state there every ``STASH_EVERY_S`` seconds and at the
    end (:func:`stash`).
    """
    import torch

    torch.set_num_threads(threads)
    if stash_dir is not None:
        unstash(work, stash_dir)
    trainer = _make_trainer(work, epochs, device, iterations, workers, lr)
    trainer.stash_dir, trainer.work = stash_dir, work
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
    parser.add_argument("--lr", type=float, default=INITIAL_LR,
                        help="fit: initial learning rate (the same on every resume)")
    parser.add_argument("--pretrained", type=Path,
                        help="fit: start a new run from this checkpoint's network weights")
    parser.add_argument("--stash", type=Path,
                        help="fit: resume from the state kept in this folder when --work has none, and keep "
                             "the state there every 30 min and at the end; plan: preprocess with its plan")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.stage == "plan":
        stashed = args.stash / STASH_PLANS if args.stash is not None else None
        plan(args.work, args.spacing, args.patch, tuple(args.features), args.batch, args.threads,
             plans_from=stashed if stashed is not None and stashed.is_file() else None)
    elif args.stage == "fit":
        fit(args.work, args.epochs, args.device, args.threads, args.iterations, args.pretrained,
            args.workers, args.stash, args.lr)
    else:
        logger.info("%.2f s per iteration", speed(args.work, threads=args.threads))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
