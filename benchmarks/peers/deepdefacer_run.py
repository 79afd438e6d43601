"""Run deepdefacer 2.1.2 (PyPI) on one image, with SimpleITK 2.

Usage (in an environment with ``deepdefacer==2.1.2``, ``nibabel<5``, Keras 2, i.e.
``tensorflow-cpu==2.15.*``, ``numpy<2`` and ``SimpleITK``)::

    python benchmarks/peers/deepdefacer_run.py INPUT.nii.gz OUTPUT.nii.gz

deepdefacer was written for SimpleITK 1, whose generic ``sitk.Transform(t)`` could be
extended with ``AddTransform``; SimpleITK 2 has ``CompositeTransform`` for that. This
shim gives deepdefacer a ``Transform`` that is a composite holding ``t``, then runs its
command line unchanged.
"""

import sys

import SimpleITK as sitk


class _Transform(sitk.CompositeTransform):
    def __init__(self, transform):  # type: ignore[no-untyped-def]
        super().__init__(transform.GetDimension())
        self.AddTransform(transform)


sitk.Transform = _Transform

if __name__ == "__main__":
    from deepdefacer.defacer import deface_3D_MRI

    src, dst = sys.argv[1], sys.argv[2]
    sys.argv = ["deepdefacer", "--input_file", src, "--defaced_output_path", dst]
    deface_3D_MRI()
