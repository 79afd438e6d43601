"""The network engine against nnU-Net's own predictor and between its two backends, on a
real head (pycortex S1 at 2 mm)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from bids_deface.data import default_model_dir
from bids_deface.engine import ONNX_NAME, Network, export_onnx
from bids_deface.masking import FaceModel

pytestmark = pytest.mark.slow


def _zyx(img: nib.Nifti1Image) -> tuple[np.ndarray, list[float]]:
    ras = nib.as_closest_canonical(img)
    return (ras.get_fdata(dtype=np.float32).transpose(2, 1, 0),
            [float(z) for z in ras.header.get_zooms()[:3][::-1]])


def test_labels_match_nnunet_predictor(s1_2mm: nib.Nifti1Image) -> None:
    """nnU-Net's predictor without mirroring and the engine give the same labels but for
    the resampling (scikit-image splines there, linear here)."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(use_mirroring=False, device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(default_model_dir()), ("all",), "checkpoint_final.pth")
    arr, spacing = _zyx(s1_2mm)
    stock = predictor.predict_single_npy_array(arr[None], {"spacing": spacing}, None, None, False)
    ours = FaceModel(default_model_dir(), device="cpu", threads=2).predict_labels(
        nib.as_closest_canonical(s1_2mm)).transpose(2, 1, 0)
    for label in (1, 2):
        a, b = stock == label, ours == label
        assert a.sum() > 10_000
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.99, label


def test_left_right_mirroring_matches_nnunet_predictor(s1_2mm: nib.Nifti1Image) -> None:
    """Test-time mirroring along the left-right axis (``FaceModel(mirror=True)``) gives
    nnU-Net's predictor's labels with mirroring allowed along that axis alone, and
    differs from the unmirrored labels."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(use_mirroring=True, device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(default_model_dir()), ("all",), "checkpoint_final.pth")
    predictor.allowed_mirroring_axes = (2,)  # x of nnU-Net's [z, y, x]: left-right for a RAS image
    arr, spacing = _zyx(s1_2mm)
    stock = predictor.predict_single_npy_array(arr[None], {"spacing": spacing}, None, None, False)
    model = FaceModel(default_model_dir(), device="cpu", threads=2, mirror=True)
    canonical = nib.as_closest_canonical(s1_2mm)
    ours = model.predict_labels(canonical).transpose(2, 1, 0)
    plain = FaceModel(default_model_dir(), device="cpu", threads=2).predict_labels(canonical).transpose(2, 1, 0)
    for label in (1, 2):
        a, b, c = stock == label, ours == label, plain == label
        assert a.sum() > 10_000
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.99, label
        assert (b != c).sum() > 100, label


def test_cut_pad_continues_only_a_cut_head(s1_2mm: nib.Nifti1Image) -> None:
    """``cut_pad_mm`` shows the network a head cut at its bottom continued downward and
    gives logits on the image's own grid; along an axis whose ends hold no tissue the
    image is seen as it is."""
    from bids_deface.engine import cut_sides

    arr, spacing = _zyx(s1_2mm)  # nnU-Net's [z, y, x]: axis 0 inferior-superior, 2 left-right
    net = Network(default_model_dir(), torch.device("cpu"), threads=2)
    whole = net.logits(arr, spacing).values
    assert cut_sides(arr)[2] == (False, False) and cut_sides(arr)[0][1] is False
    assert torch.equal(net.logits(arr, spacing, cut_pad_mm=24.0, cut_axes=(2,)).values, whole)
    # a slab from about the orbits up: its lowest slice cuts through the head
    slab = np.ascontiguousarray(arr[int(0.45 * arr.shape[0]):])
    assert cut_sides(slab)[0] == (True, False)
    plain = net.logits(slab, spacing).values
    padded = net.logits(slab, spacing, cut_pad_mm=24.0, cut_axes=(0,)).values
    assert padded.shape == plain.shape
    # only the first slice's end may be continued, or only the last's (which cuts nothing)
    assert torch.equal(net.logits(slab, spacing, cut_pad_mm=24.0, cut_axes=(0,), cut_ends=(True, False)).values, padded)
    assert torch.equal(net.logits(slab, spacing, cut_pad_mm=24.0, cut_axes=(0,), cut_ends=(False, True)).values, plain)
    changed = (padded.argmax(0) != plain.argmax(0)).float().mean()
    assert 0.001 < float(changed) < 0.2


@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
def test_onnx_runtimes_and_torch_agree(s1_2mm: nib.Nifti1Image, runtime: str) -> None:
    """The ONNX export in either runtime gives PyTorch's logits to rounding, and ``auto``
    takes OpenVINO (installed with the package)."""
    arr, spacing = _zyx(s1_2mm)
    assert Network(default_model_dir(), torch.device("cpu"), threads=2).backend.startswith("openvino ")
    onnx_net = Network(default_model_dir(), torch.device("cpu"), threads=2, runtime=runtime)
    assert onnx_net.backend.startswith(runtime + " ")
    torch_net = Network(default_model_dir(), torch.device("cpu"), threads=2, runtime="torch")
    assert torch_net.backend == "torch (cpu)"
    a = onnx_net.logits(arr, spacing).values
    b = torch_net.logits(arr, spacing).values
    assert a.shape == b.shape and a.shape[0] == 3
    assert float((a - b).abs().max()) < 1e-2 * float(b.abs().max())
    assert float((a.argmax(0) == b.argmax(0)).float().mean()) > 0.9999


@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
def test_logits_do_not_depend_on_the_threads(s1_2mm: nib.Nifti1Image, runtime: str) -> None:
    """Either runtime gives the same logits on one thread as on two (OpenVINO as streams
    of one thread each, ONNX Runtime on its threads), and its name says how it runs."""
    arr, spacing = _zyx(s1_2mm)
    one, two = (Network(default_model_dir(), torch.device("cpu"), threads=n, runtime=runtime) for n in (1, 2))
    if runtime == "openvino":
        assert one.backend.endswith(" (1 stream of 1 thread)") and two.backend.endswith(" (2 streams of 1 thread)")
    else:
        assert one.backend.endswith(" (1 thread)") and two.backend.endswith(" (2 threads)")
    assert torch.equal(one.logits(arr, spacing).values, two.logits(arr, spacing).values)


def test_runtime_that_cannot_run_the_model_is_an_error(tmp_path: Path) -> None:
    """Asking for an ONNX runtime where the folder has no export is an error, not PyTorch
    in silence; ``auto`` falls back to PyTorch."""
    folder = Path(shutil.copytree(default_model_dir(), tmp_path / "model"))
    (folder / ONNX_NAME).unlink()
    with pytest.raises(RuntimeError, match="cannot run in openvino"):
        Network(folder, torch.device("cpu"), runtime="openvino")
    with pytest.raises(ValueError, match="runtime must be one of"):
        Network(folder, torch.device("cpu"), runtime="tensorrt")
    assert Network(folder, torch.device("cpu")).backend == "torch (cpu)"


def test_stale_onnx_is_not_used_and_export_renews_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A model folder whose checkpoint is not the one its ONNX file was made from (e.g.
    fine-tuned in place) runs in PyTorch, and says so; exporting again restores ONNX Runtime."""
    folder = Path(shutil.copytree(default_model_dir(), tmp_path / "model"))
    ckpt_path = folder / "fold_all" / "checkpoint_final.pth"
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    ckpt["network_weights"] = {k: v * 1.01 if torch.is_floating_point(v) else v
                               for k, v in ckpt["network_weights"].items()}
    torch.save(ckpt, ckpt_path)
    with caplog.at_level(logging.WARNING, logger="bids_deface.engine"):
        net = Network(folder, torch.device("cpu"))
    assert net.backend == "torch (cpu)"
    assert ONNX_NAME in caplog.text
    export_onnx(folder)
    renewed = Network(folder, torch.device("cpu"))
    assert renewed.backend.startswith("openvino ")
    x = np.random.default_rng(0).normal(size=(48, 64, 64)).astype(np.float32)
    a = renewed.sliding_window(x)
    b = net.sliding_window(x)
    assert np.abs(a - b).max() < 1e-2 * np.abs(b).max()


def test_several_folds_are_averaged(tmp_path: Path) -> None:
    """A model folder with several folds (nnU-Net's cross-validation) averages their logits."""
    folders = []
    for name, factor in (("a", 1.0), ("b", 1.02)):
        folder = Path(shutil.copytree(default_model_dir(), tmp_path / name))
        (folder / ONNX_NAME).unlink()
        path = folder / "fold_all" / "checkpoint_final.pth"
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        ckpt["network_weights"] = {k: v * factor if torch.is_floating_point(v) else v
                                   for k, v in ckpt["network_weights"].items()}
        torch.save(ckpt, path)
        folders.append(folder)
    both = Path(shutil.copytree(folders[0], tmp_path / "both"))
    (both / "fold_all").rename(both / "fold_0")
    shutil.copytree(folders[1] / "fold_all", both / "fold_1")
    x = np.random.default_rng(1).normal(size=(48, 64, 64)).astype(np.float32)
    single = [Network(f, torch.device("cpu")).sliding_window(x) for f in folders]
    ensemble = Network(both, torch.device("cpu"))
    assert "2 folds averaged" in ensemble.backend
    assert np.abs(single[0] - single[1]).max() > 1e-3
    assert np.allclose(ensemble.sliding_window(x), (single[0] + single[1]) / 2, atol=1e-4)


def test_plans_with_a_transpose_match_nnunet(tmp_path: Path, s1_2mm: nib.Nifti1Image) -> None:
    """A plan that transposes the axes (its spacing given in the transposed order), as
    nnU-Net plans anisotropic datasets: the same labels as nnU-Net's predictor."""
    import json

    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    folder = Path(shutil.copytree(default_model_dir(), tmp_path / "model"))
    (folder / ONNX_NAME).unlink()
    plans = json.loads((folder / "plans.json").read_text())
    plans["transpose_forward"], plans["transpose_backward"] = [1, 2, 0], [2, 0, 1]
    plans["configurations"]["3d_fullres"]["spacing"] = [3.0, 2.5, 3.5]
    (folder / "plans.json").write_text(json.dumps(plans))
    predictor = nnUNetPredictor(use_mirroring=False, device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(folder), ("all",), "checkpoint_final.pth")
    arr, spacing = _zyx(s1_2mm)
    stock = predictor.predict_single_npy_array(arr[None], {"spacing": spacing}, None, None, False)
    model = FaceModel(folder, device="cpu", threads=2)
    assert model.spacing_zyx == (3.5, 3.0, 2.5)
    ours = model.predict_labels(nib.as_closest_canonical(s1_2mm)).transpose(2, 1, 0)
    for label in (1, 2):
        a, b = stock == label, ours == label
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.98, label
