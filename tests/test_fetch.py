"""Source heads converted from the registries' own formats."""

from __future__ import annotations

import gzip
import json

import numpy as np

from bids_deface.training.fetch import _brainbrowser_volume


def test_a_brainbrowser_volume_keeps_each_voxel_at_its_world_position() -> None:
    # as BrainBrowser stores MINC: slowest axis first (here z, x, y), each world axis with
    # its length, step, start and direction cosines (x runs right to left, z downwards)
    lengths = {"xspace": 4, "yspace": 5, "zspace": 3}
    header = {
        "order": ["zspace", "xspace", "yspace"],
        "xspace": {"space_length": 4, "step": -1.0, "start": 10.0, "direction_cosines": [1, 0, 0]},
        "yspace": {"space_length": 5, "step": 1.5, "start": -20.0, "direction_cosines": [0, 1, 0]},
        "zspace": {"space_length": 3, "step": -2.0, "start": 30.0, "direction_cosines": [0, 0, 1]},
    }
    stored = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)  # [z, x, y]
    img = _brainbrowser_volume(gzip.compress(json.dumps(header).encode()), gzip.compress(stored.tobytes()))
    assert img.shape == (lengths["xspace"], lengths["yspace"], lengths["zspace"])
    data = np.asanyarray(img.dataobj)
    for i, j, k in [(0, 0, 0), (3, 4, 2), (1, 2, 0), (2, 0, 1)]:
        world = img.affine @ [i, j, k, 1]
        assert np.allclose(world[:3], [10.0 - i, -20.0 + 1.5 * j, 30.0 - 2.0 * k])
        assert data[i, j, k] == stored[k, i, j]
    assert int(img.header["qform_code"]) == 1 and int(img.header["sform_code"]) == 1
    assert img.header.get_xyzt_units() == ("mm", "sec")
