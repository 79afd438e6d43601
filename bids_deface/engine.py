"""The network of an nnU-Net v2 model folder, run without nnU-Net's inference machinery.

nnU-Net's predictor resamples with scikit-image splines, imports its whole training stack
(seconds before the first image) and runs the network in PyTorch. This module does the
same steps as its default 3D inference, in the same order and with the same conventions:

1. crop to the bounding box of the non-zero voxels;
2. z-score normalisation over the cropped image (``ZScoreNormalization`` without mask);
3. resampling to the plan's spacing, to nnU-Net's target shape (``compute_new_shape``):
   linear in-plane, and nearest along a slice axis more than three times coarser than the
   finest (nnU-Net's separate-z resampling of data, its ``order_z=0``);
4. sliding-window logits over patches of the plan's size, half a patch apart, weighted by
   nnU-Net's Gaussian importance map (``sigma = patch / 8``), the image padded with zeros
   to at least one patch.

On the CPU the network runs from the model folder's ``model.onnx`` export of its checkpoint:
in OpenVINO when it is installed (about twice as fast as ONNX Runtime on two threads, in
float32), else in ONNX Runtime (about twice as fast as PyTorch), and in PyTorch when the
folder has no export made from its checkpoint; on a CUDA device always in PyTorch. The
runtimes' logits differ by rounding (about 1e-3 of logits up to 10 or more); neither's
depend on the number of threads (OpenVINO runs each patch on one thread, patches side by
side: one patch on two threads would change its logits by up to 0.04). Logits come
back on the model's grid over the cropped box: :class:`Logits`.
"""

from __future__ import annotations

import json
import logging
import pydoc
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .anatomy import bounding_box, tissue_level
from .io import sha256_file
from .settings import RUNTIMES

__all__ = ["Logits", "Network", "ONNX_NAME", "RUNTIMES", "sliding_window_starts",
           "gaussian_importance", "target_shape"]

logger = logging.getLogger(__name__)

ONNX_NAME = "model.onnx"
#: nnU-Net's ``ANISO_THRESHOLD``: above this ratio of coarsest to finest voxel side, data
#: are resampled separately along the coarse axis, by nearest neighbour.
ANISO_THRESHOLD = 3.0


def target_shape(shape: Sequence[int], spacing: Sequence[float], new_spacing: Sequence[float]) -> tuple[int, ...]:
    """nnU-Net's ``compute_new_shape``: ``round(shape × spacing / new_spacing)``.

    >>> target_shape((256, 256, 176), (1.0, 1.0, 1.0), (3.0, 3.0, 3.0))
    (85, 85, 59)
    """
    return tuple(int(round(n * s / t)) for n, s, t in zip(shape, spacing, new_spacing))


def sliding_window_starts(size: int, patch: int, step: float = 0.5) -> list[int]:
    """nnU-Net's ``compute_steps_for_sliding_window`` along one axis.

    >>> sliding_window_starts(110, 64), sliding_window_starts(64, 64), sliding_window_starts(85, 64)
    ([0, 23, 46], [0], [0, 21])
    """
    n = int(np.ceil((size - patch) / (patch * step))) + 1
    if n == 1:
        return [0]
    width = (size - patch) / (n - 1)
    return [int(np.round(width * i)) for i in range(n)]


def gaussian_importance(patch: Sequence[int], sigma_scale: float = 1.0 / 8, peak: float = 10.0) -> np.ndarray:
    """nnU-Net's ``compute_gaussian``: a Gaussian centred in the patch, peak ``peak``, no zeros.

    Separable, so built from three 1D profiles (the same values as filtering a delta).

    >>> g = gaussian_importance((8, 8, 8)); float(g.max()), bool(g.min() > 0), g.shape
    (10.0, True, (8, 8, 8))
    """
    from scipy.ndimage import gaussian_filter1d

    profiles = []
    for n in patch:
        delta = np.zeros(n)
        delta[n // 2] = 1.0
        profiles.append(gaussian_filter1d(delta, n * sigma_scale, mode="constant", cval=0.0))
    g = profiles[0][:, None, None] * profiles[1][None, :, None] * profiles[2][None, None, :]
    g = g / (g.max() / peak)
    g[g == 0] = g[g > 0].min()
    return g.astype(np.float32)


def _resample(data: torch.Tensor, shape: Sequence[int], spacing: Sequence[float],
              new_spacing: Sequence[float]) -> torch.Tensor:
    """``data`` (3D) to ``shape``: linear, and nearest along a slice axis whose voxels are
    more than ``ANISO_THRESHOLD`` times the finest (in the data or at the new spacing)."""
    if tuple(data.shape) == tuple(shape):
        return data
    coarse = None
    for sides in (spacing, new_spacing):
        sides = np.asarray(sides, float)
        if sides.max() / sides.min() > ANISO_THRESHOLD and np.count_nonzero(sides == sides.max()) == 1:
            coarse = int(np.argmax(sides))
            break
    x = data[None, None]
    if coarse is None:
        return torch.nn.functional.interpolate(x, size=list(shape), mode="trilinear", align_corners=False)[0, 0]
    first = [n if a != coarse else data.shape[a] for a, n in enumerate(shape)]
    x = torch.nn.functional.interpolate(x, size=first, mode="trilinear", align_corners=False)
    return torch.nn.functional.interpolate(x, size=list(shape), mode="nearest-exact")[0, 0]


@dataclass(frozen=True)
class Logits:
    """Class logits on the model's grid over the box ``box`` of the input array."""

    values: torch.Tensor
    """``(classes, *grid)`` float32 on the CPU."""
    box: tuple[slice, ...]
    """The cropped box (non-zero voxels) of the input array the logits cover."""
    shape: tuple[int, ...]
    """The input array's shape."""


class Network:
    """The network of an nnU-Net v2 model folder (``plans.json``, ``dataset.json``,
    ``fold_all/checkpoint_final.pth``) with nnU-Net's default 3D inference.

    Parameters
    ----------
    model_dir : Path
        The model folder.
    device : torch.device
        ``cpu`` or ``cuda``.
    threads : int or None
        CPU threads for the network (``None``: torch's setting).
    runtime : str
        One of :data:`~bids_deface.settings.RUNTIMES`. ``auto``: on the CPU, the folder's
        ``model.onnx`` in OpenVINO, else in ONNX Runtime, when it was exported from the
        checkpoint; else PyTorch. ``openvino`` or ``onnxruntime`` ask for that runtime (an
        error where it cannot run the model); ``torch``: always PyTorch.
    """

    def __init__(self, model_dir: Path, device: torch.device, threads: int | None = None,
                 checkpoint: str = "checkpoint_final.pth", configuration: str = "3d_fullres",
                 runtime: str = "auto") -> None:
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}")
        self.model_dir = Path(model_dir)
        plans = json.loads((self.model_dir / "plans.json").read_text())
        config = plans["configurations"][configuration]
        # the plan's axes are the array's (nnU-Net's [z, y, x] of the reoriented image) in
        # the order ``transpose_forward``; its spacing is given in that order
        self.transpose = tuple(int(a) for a in plans.get("transpose_forward", [0, 1, 2]))
        if config["normalization_schemes"] != ["ZScoreNormalization"] or any(config["use_mask_for_norm"]):
            raise ValueError(f"{self.model_dir}: only z-score normalisation without mask is supported")
        self.dataset_name = str(plans["dataset_name"])
        plan_spacing = [float(s) for s in config["spacing"]]
        #: the plan's voxel size in nnU-Net's ``[z, y, x]`` order (before its transpose)
        self.spacing = tuple(plan_spacing[self.transpose.index(a)] for a in range(3))
        self.patch = tuple(int(p) for p in config["patch_size"])
        self.classes = len(json.loads((self.model_dir / "dataset.json").read_text())["labels"])
        self.device = device
        self.threads = threads
        folds = sorted(p for p in self.model_dir.glob("fold_*") if (p / checkpoint).is_file())
        if not folds:
            raise FileNotFoundError(f"no fold_*/{checkpoint} in {self.model_dir}")
        # several folds (e.g. nnU-Net's five cross-validation folds) are an ensemble: their
        # logits are averaged, as nnU-Net's predictor does
        self.checkpoints = [p / checkpoint for p in folds]
        self.checkpoint = self.checkpoints[0]
        self._infer = None
        self.backend = f"torch ({device.type})"
        if runtime != "torch":
            compiled = self._compiled(runtime)
            if compiled is not None:
                self._infer, self.backend = compiled
            elif runtime != "auto":
                raise RuntimeError(f"{self.model_dir}: the network cannot run in {runtime} "
                                   f"(on {device.type}, {len(self.checkpoints)} fold(s)); see the log")
        self._nets = [] if self._infer is not None else [
            self._torch_network(config["architecture"], path) for path in self.checkpoints]
        self._gauss = gaussian_importance(self.patch)
        if len(self.checkpoints) > 1:
            self.backend += f", {len(self.checkpoints)} folds averaged"

    def _torch_network(self, architecture: dict, checkpoint: Path) -> torch.nn.Module:
        cls = pydoc.locate(architecture["network_class_name"])
        kwargs = dict(architecture["arch_kwargs"])
        for key in architecture.get("_kw_requires_import", ()):
            if kwargs.get(key) is not None:
                kwargs[key] = pydoc.locate(kwargs[key])
        net = cls(input_channels=1, num_classes=self.classes, deep_supervision=False, **kwargs)  # type: ignore[misc]
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)["network_weights"]
        net.load_state_dict({k: v.float() if torch.is_floating_point(v) else v for k, v in state.items()})
        if self.threads:
            torch.set_num_threads(int(self.threads))
        return net.eval().to(self.device)

    def _compiled(self, runtime: str):  # type: ignore[no-untyped-def]
        """``(infer, name)``: a function from one patch ``(1, 1, *patch)`` to its logits
        ``(1, classes, *patch)`` in the runtime ``runtime`` (``auto``: the fastest installed),
        and the runtime's name with its version and threads; None where no ONNX runtime
        applies."""
        path = self.model_dir / ONNX_NAME
        if self.device.type != "cpu" or len(self.checkpoints) != 1 or not path.is_file():
            return None
        try:
            import onnxruntime as ort
        except ImportError:
            logger.info("onnxruntime is not installed: the network runs in PyTorch")
            return None
        threads = int(self.threads or torch.get_num_threads())
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        made_from = session.get_modelmeta().custom_metadata_map.get("checkpoint_sha256")
        if made_from != sha256_file(self.checkpoint):
            logger.warning("%s was not exported from %s: the network runs in PyTorch", path, self.checkpoint)
            return None
        if runtime in ("auto", "openvino"):
            compiled = _openvino(path, self.patch, threads)
            if compiled is not None:
                return compiled
            if runtime == "openvino":
                return None
        return (lambda patches: [session.run(None, {"image": p})[0] for p in patches]), f"onnxruntime {ort.__version__} ({_threads(threads)})"

    def _forward(self, patches: list[np.ndarray]) -> list[np.ndarray]:
        """Logits ``(classes, *patch)`` of each patch ``patch`` of ``patches``."""
        if self._infer is not None:
            return [out[0] for out in self._infer([p[None, None] for p in patches])]
        outs = []
        with torch.inference_mode():
            for patch in patches:
                x = torch.from_numpy(patch)[None, None].to(self.device)
                total = self._nets[0](x)[0].float()
                for net in self._nets[1:]:
                    total += net(x)[0].float()
                outs.append((total / len(self._nets)).cpu().numpy())
        return outs

    def logits(self, data: np.ndarray, spacing: Sequence[float], new_spacing: Sequence[float] | None = None,
               axes: Sequence[int] = (0, 1, 2), mirror: Sequence[int] = (), cut_pad_mm: float = 0.0,
               cut_axes: Sequence[int] = (0, 1, 2), cut_ends: tuple[bool, bool] = (True, True)) -> Logits:
        """Logits of ``data`` (3D, voxel sizes ``spacing``) on the grid of ``new_spacing``
        (default: the plan's) over its non-zero box, all in ``data``'s own axis order.

        ``axes`` orders ``data``'s axes as the network's (``(2, 1, 0)`` for a RAS array
        and nnU-Net's ``[z, y, x]``): only the small array on the model's grid is transposed.
        ``new_spacing`` is in ``data``'s axis order. ``mirror`` names axes of ``data`` along
        which the image is also seen mirrored (test-time mirroring): the logits are the mean
        of the image's and the mirrored image's, mirrored back. With ``cut_pad_mm`` > 0, each
        side of the image across ``cut_axes`` (axes of ``data``) that cuts through tissue
        (:func:`cut_sides`) is continued outward by that much, its last slice repeated,
        before the network sees it, so that what the field of view cuts lies inside the
        network's view; the logits are those of the image's own voxels. ``cut_ends`` says
        which ends of those axes may be continued: the first slice's, the last slice's.
        """
        axes = tuple(int(a) for a in axes)
        if new_spacing is None:
            new_spacing = [self.spacing[axes.index(a)] for a in range(3)]
        new_spacing = tuple(float(s) for s in new_spacing)
        box = bounding_box(data != 0)
        crop = torch.from_numpy(np.ascontiguousarray(data[tuple(box)], dtype=np.float32))
        mean, std = crop.mean(), crop.std()
        crop = (crop - mean) / max(float(std), 1e-8)
        grid = target_shape(crop.shape, spacing, new_spacing)
        # data -> nnU-Net's [z, y, x] (``axes``) -> the plan's order (``transpose_forward``)
        order = tuple(axes[t] for t in self.transpose)
        image = _resample(crop, grid, spacing, new_spacing).numpy().transpose(order)
        pads = [(0, 0)] * 3
        if cut_pad_mm > 0:
            model_spacing = [new_spacing[a] for a in order]
            pads = [(int(np.ceil(cut_pad_mm / sp)) if lo and cut_ends[0] else 0,
                     int(np.ceil(cut_pad_mm / sp)) if hi and cut_ends[1] else 0)
                    if a in cut_axes else (0, 0)
                    for sp, a, (lo, hi) in zip(model_spacing, order, cut_sides(image))]
            image = np.pad(image, pads, mode="edge")
        values = self.sliding_window(np.ascontiguousarray(image))
        flips = tuple(order.index(int(a)) for a in mirror)
        if flips:
            seen = self.sliding_window(np.ascontiguousarray(np.flip(image, flips)))
            values = (values + np.flip(seen, tuple(1 + f for f in flips))) / 2.0
        values = values[(slice(None), *(slice(lo, n - hi) for (lo, hi), n in zip(pads, values.shape[1:])))]
        values = values.transpose(0, *(1 + np.argsort(order)))
        return Logits(torch.from_numpy(np.ascontiguousarray(values)), tuple(box), tuple(data.shape))

    def sliding_window(self, image: np.ndarray) -> np.ndarray:
        """Gaussian-weighted logits of ``image`` (normalised, on the model's grid)."""
        pad = [max(0, p - n) for p, n in zip(self.patch, image.shape)]
        before = [p // 2 for p in pad]
        padded = np.pad(image, [(b, p - b) for b, p in zip(before, pad)]).astype(np.float32, copy=False)
        total = np.zeros((self.classes, *padded.shape), np.float32)
        weight = np.zeros(padded.shape, np.float32)
        starts = [sliding_window_starts(n, p) for n, p in zip(padded.shape, self.patch)]
        wheres = [tuple(slice(s[i], s[i] + p) for s, p, i in zip(starts, self.patch, index))
                  for index in np.ndindex(*[len(s) for s in starts])]
        # all patches at once (the runtime may run them side by side), summed in a fixed order
        for where, values in zip(wheres, self._forward([np.ascontiguousarray(padded[w]) for w in wheres])):
            total[(slice(None), *where)] += values * self._gauss
            weight[where] += self._gauss
        total /= weight
        return total[(slice(None), *(slice(b, b + n) for b, n in zip(before, image.shape)))]


def _openvino(path: Path, patch: Sequence[int], threads: int):  # type: ignore[no-untyped-def]
    """``(infer, name)`` for the ONNX model at ``path`` compiled by OpenVINO for patches of
    shape ``patch`` in float32 on ``threads`` CPU threads; None where OpenVINO is not
    installed. (OpenVINO would compute in bfloat16 on CPUs that have it unless told not to.)

    The threads run as streams of one thread each, one patch per stream: a patch's float
    sums are then those of one thread, whatever the number of threads (one stream of two
    threads gives other logits, by up to 0.04, than one thread), at the speed of one stream
    of all the threads on a head's four patches."""
    try:
        import openvino as ov
    except ImportError:
        logger.info("openvino is not installed: the network runs in ONNX Runtime")
        return None
    core = ov.Core()
    model = core.read_model(str(path))
    model.reshape({model.input(0).get_any_name(): [1, 1, *[int(p) for p in patch]]})
    def compile_streams(n: int):  # type: ignore[no-untyped-def]
        compiled = core.compile_model(model, "CPU", {"NUM_STREAMS": n, "INFERENCE_NUM_THREADS": n,
                                                     "INFERENCE_PRECISION_HINT": "f32"})
        return compiled, int(compiled.get_property("NUM_STREAMS")), int(compiled.get_property("INFERENCE_NUM_THREADS"))

    compiled, streams, used = compile_streams(int(threads))
    if used != streams:
        # OpenVINO runs at most one stream per physical core, and may keep more threads than streams
        compiled, streams, used = compile_streams(streams)
    if used != streams:
        logger.warning("OpenVINO runs %d streams on %d threads: its logits may depend on the threads", streams, used)
    queue = ov.AsyncInferQueue(compiled, streams)
    outputs: dict[int, np.ndarray] = {}

    def done(request, index: int) -> None:  # type: ignore[no-untyped-def]
        # the output tensor's memory is the request's own: copy before its next patch
        outputs[index] = np.array(request.get_output_tensor(0).data, copy=True)

    queue.set_callback(done)

    def infer(patches: list[np.ndarray]) -> list[np.ndarray]:
        outputs.clear()
        for index, x in enumerate(patches):
            queue.start_async({0: x}, userdata=index)
        queue.wait_all()
        return [outputs.pop(i) for i in range(len(patches))]

    return infer, f"openvino {ov.__version__.split('-')[0]} ({streams} stream{'s' if streams != 1 else ''} of 1 thread)"


def _threads(n: int) -> str:
    """``n`` threads, in words.

    >>> _threads(1), _threads(2)
    ('1 thread', '2 threads')
    """
    return f"{n} thread" + ("s" if n != 1 else "")


#: The share of a side's voxels that must hold tissue for the field of view to cut the head there.
CUT_SHARE = 0.05


def cut_sides(image: np.ndarray) -> list[tuple[bool, bool]]:
    """For each axis, whether its first and its last slice cut through tissue: at least
    ``CUT_SHARE`` of the slice lies above the image's
    :func:`~bids_deface.anatomy.tissue_level`.

    >>> img = np.zeros((10, 10, 10), np.float32); img[2:, 3:7, 3:7] = 100.0
    >>> cut_sides(img)
    [(False, True), (False, False), (False, False)]
    """
    tissue = image > tissue_level(image)
    out = []
    for axis in range(3):
        first = np.take(tissue, 0, axis=axis)
        last = np.take(tissue, -1, axis=axis)
        out.append((bool(first.mean() >= CUT_SHARE), bool(last.mean() >= CUT_SHARE)))
    return out


def export_onnx(model_dir: Path, checkpoint: str = "checkpoint_final.pth") -> Path:
    """Write ``model.onnx`` (fp32 graph, fp16 weights cast at load) of a model folder's
    checkpoint into the folder, recording the checkpoint's SHA-256 in its metadata."""
    import onnx
    from onnx import helper, numpy_helper

    model_dir = Path(model_dir)
    net = Network(model_dir, torch.device("cpu"), checkpoint=checkpoint, runtime="torch")
    if len(net.checkpoints) != 1:
        raise ValueError(f"{model_dir}: ONNX export of a single fold only, found {len(net.checkpoints)}")
    torch_net = net._nets[0]
    path = model_dir / ONNX_NAME
    tmp = path.with_suffix(".tmp.onnx")
    with warnings.catch_warnings():
        # instance norm always normalises by the input's own statistics, in eval mode too
        warnings.filterwarnings("ignore", message=".*instance_norm.*")
        torch.onnx.export(torch_net, torch.zeros(1, 1, *net.patch), str(tmp), input_names=["image"],
                          output_names=["logits"], dynamic_axes={"image": {2: "z", 3: "y", 4: "x"}},
                          dynamo=False)
    graph_model = onnx.load(str(tmp))
    tmp.unlink()
    graph = graph_model.graph
    casts = []
    for init in graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT and init.dims:
            values = numpy_helper.to_array(init).astype(np.float16)
            name = init.name
            init.CopyFrom(numpy_helper.from_array(values, name + "_fp16"))
            casts.append(helper.make_node("Cast", [name + "_fp16"], [name], to=onnx.TensorProto.FLOAT))
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(graph_model)
    helper.set_model_props(graph_model, {"checkpoint_sha256": sha256_file(net.checkpoint)})
    onnx.save(graph_model, str(tmp))
    tmp.replace(path)
    return path
