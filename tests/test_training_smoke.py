"""The whole training pipeline for a few iterations on a tiny phantom, so that it keeps working:
labels → synthesis → compact plan and preprocessing → training → fp16 export → prediction."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_deface.training.labels import make_labels, save_labels
from bids_deface.training.synth import write_dataset

from .phantoms import head_phantom

pytestmark = pytest.mark.slow


def test_training_pipeline_end_to_end(tmp_path: Path) -> None:
    img, brain = head_phantom()
    labels = make_labels(img, brain)
    face = labels.target == 1
    assert face.any() and (labels.target == 2).sum() == brain.sum()
    # the label follows docs/mask.md: eyes and nose inside, nothing within 3 mm of the brain
    ras = nib.as_closest_canonical(img)
    world = lambda p: np.round(np.linalg.inv(labels.affine) @ np.r_[p, 1])[:3].astype(int)  # noqa: E731
    for point in ((-32, 72, -28), (32, 72, -28), (0, 95, -50)):
        assert face[tuple(world(point))], point
    assert ras.shape == labels.target.shape
    save_labels(labels, tmp_path / "labels", "phantom")

    raw = tmp_path / "nnunet_raw" / "Dataset801_FaceEars"
    write_dataset(tmp_path / "labels", ["phantom"], 4, raw, seed=3)
    assert len(list((raw / "imagesTr").glob("*_0000.nii.gz"))) == 4
    assert json.loads((raw / "dataset.json").read_text())["numTraining"] == 4

    # plan/fit run as the documented commands (fresh processes, nnU-Net paths from --work)
    py = sys.executable
    kept = tmp_path / "kept"
    for args in (["plan", "--work", str(tmp_path), "--patch", "32", "--features", "4", "8", "16"],
                 ["fit", "--work", str(tmp_path), "--epochs", "1", "--iterations", "2", "--stash", str(kept)]):
        proc = subprocess.run([py, "-m", "bids_deface.training.train", *args], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    proc = subprocess.run([py, "-m", "bids_deface.training.export", "--work", str(tmp_path),
                           "--out", str(tmp_path / "models")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]

    from bids_deface.masking import FaceModel

    folder = tmp_path / "models" / "Dataset801_FaceEars" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    import torch

    ckpt = torch.load(folder / "fold_all" / "checkpoint_final.pth", weights_only=False)
    assert ckpt["trainer_name"] == "nnUNetTrainer" and "optimizer_state" not in ckpt
    assert tuple(ckpt["inference_allowed_mirroring_axes"]) == (2,)  # left-right only
    assert all(v.dtype == torch.float16 for v in ckpt["network_weights"].values() if v.is_floating_point())
    model = FaceModel(folder, device="cpu")
    pred = model.predict(img)
    assert pred.face.shape == img.shape and pred.brain.shape == img.shape

    # fine-tuning at a finer spacing starts from the exported weights (a finer plan
    # trained from the shipped one): after one iteration the weights are still those weights
    finer = tmp_path / "finer"
    (finer / "nnunet_raw").mkdir(parents=True)
    (finer / "nnunet_raw" / "Dataset801_FaceEars").symlink_to(raw)
    start = folder / "fold_all" / "checkpoint_final.pth"
    for args in (["plan", "--work", str(finer), "--spacing", "3", "--patch", "32", "--features", "4", "8", "16"],
                 ["fit", "--work", str(finer), "--epochs", "1", "--iterations", "1", "--pretrained", str(start)]):
        proc = subprocess.run([py, "-m", "bids_deface.training.train", *args], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    tuned = torch.load(next((finer / "nnunet_results").rglob("checkpoint_final.pth")), weights_only=False)
    for key, before in ckpt["network_weights"].items():
        if before.is_floating_point() and before.ndim == 5:
            a, b = before.float().ravel(), tuned["network_weights"][key].float().ravel()
            assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.9, key


    # the state kept for the next machine: float16, the plan, the epoch reached
    import json as _json

    stashed = torch.load(kept / "checkpoint.pth", weights_only=False)
    assert stashed["current_epoch"] == 1
    assert all(v.dtype == torch.float16 for v in stashed["network_weights"].values() if v.is_floating_point())
    assert _json.loads((kept / "progress.json").read_text())["epoch"] == 1
    # a fresh machine: the same raw data, nothing else but the kept state; it plans with the
    # kept plan and trains on from epoch 1 to 2
    fresh = tmp_path / "fresh"
    (fresh / "nnunet_raw").mkdir(parents=True)
    (fresh / "nnunet_raw" / "Dataset801_FaceEars").symlink_to(raw)
    for args in (["plan", "--work", str(fresh), "--spacing", "7", "--stash", str(kept)],
                 ["fit", "--work", str(fresh), "--epochs", "2", "--iterations", "2", "--stash", str(kept)]):
        proc = subprocess.run([py, "-m", "bids_deface.training.train", *args], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "resuming" in proc.stderr and "epoch 1" in proc.stderr
    plans = _json.loads(next((fresh / "nnunet_preprocessed").rglob("nnUNetPlans.json")).read_text())
    assert plans == _json.loads((kept / "plans.json").read_text())  # not the --spacing 7 one
    resumed = torch.load(next((fresh / "nnunet_results").rglob("checkpoint_final.pth")), weights_only=False)
    assert resumed["current_epoch"] == 2 and len(resumed["logging"]["train_losses"]) == 2
    assert _json.loads((kept / "progress.json").read_text()) | {"stashed_at": None} == {
        "epoch": 2, "finished": True, "train_loss_last": round(resumed["logging"]["train_losses"][-1], 4),
        "pseudo_dice_last": [round(float(v), 4) for v in resumed["logging"]["dice_per_class_or_region"][-1]],
        "stashed_at": None}
