# bids-deface container image: BIDS App (ENTRYPOINT bids-deface), CPU build of torch by default.
#
#   docker build -t bidsdeface/bids-deface:latest \
#       --build-arg IMAGE_TAG=bidsdeface/bids-deface:latest .
#
# GPU image: pick a CUDA build of the same torch (and the torchvision made with it):
#
#   docker build -t bidsdeface/bids-deface:cuda --build-arg IMAGE_TAG=bidsdeface/bids-deface:cuda \
#       --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
#   docker run --gpus all ... bidsdeface/bids-deface:cuda ... --device cuda
#
# Stages: `build` makes the wheel (the trained model travels inside it: pyproject.toml
# force-includes models/ as bids_deface/_models, so there is no separate model stage);
# `runtime` installs torch, the wheel and the BIDS validator, and fetches the TemplateFlow
# template that refacing takes its face from. Nothing is downloaded at run time.

# ---------------------------------------------------------------------------- build --
FROM python:3.11-slim AS build

# RUN lines with a pipe fail when any command in it fails, not only the last (hadolint DL4006)
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY bids_deface/ bids_deface/
COPY models/ models/

# hatchling (the build backend) comes in pip's isolated build environment
RUN python -m pip wheel --no-deps --wheel-dir /dist .
# an image without the model could only exit with code 6: refuse to build it
# (grep without -q reads the whole listing, so with pipefail the lister never dies of a closed pipe)
RUN python -m zipfile -l /dist/bids_deface-*.whl \
      | grep -E 'bids_deface/_models/Dataset801_FaceEars/[^/]+/fold_all/checkpoint_final\.pth' >/dev/null \
 || { echo "no trained model in the wheel: models/Dataset801_FaceEars/*/fold_all/checkpoint_final.pth is missing" >&2; exit 1; }

# -------------------------------------------------------------------------- runtime --
FROM python:3.11-slim AS runtime

# as in the build stage: a pipe in a RUN line fails when any of its commands fails
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# torch is installed first, from the PyTorch index, and then pinned: nnunetv2's
# dependencies (timm -> torchvision) must not replace it with another build.
# The default version is the one of constraints.txt; torchvision must be its companion.
ARG TORCH_VERSION=2.13.0
ARG TORCHVISION_VERSION=0.28.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG BIDS_VALIDATOR_VERSION=3.0.2
ARG VERSION=0.1.0
# the tag the image is built under, recorded in the outputs' GeneratedBy (none if not given)
ARG IMAGE_TAG=
ARG VCS_REF=unknown
ARG BUILD_DATE=unknown

LABEL org.opencontainers.image.title="bids-deface" \
      org.opencontainers.image.description="Remove faces and ears from structural MRI in BIDS datasets (BIDS App, nnU-Net v2)" \
      org.opencontainers.image.url="https://pypi.org/project/bids-deface/" \
      org.opencontainers.image.documentation="https://pypi.org/project/bids-deface/" \
      org.opencontainers.image.vendor="bids-deface developers" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.created="${BUILD_DATE}" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim"

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1

RUN python -m pip install --index-url "${TORCH_INDEX_URL}" \
      "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"

# the repository's constraints, with torch and torchvision pinned to the builds just installed
COPY constraints.txt /opt/bids-deface/constraints.repo.txt
RUN { grep -v -E '^(torch|torchvision)([^A-Za-z0-9_.-]|$)' /opt/bids-deface/constraints.repo.txt || true; \
      python -m pip freeze | grep -E '^(torch|torchvision)=='; } > /opt/bids-deface/constraints.txt \
 && cat /opt/bids-deface/constraints.txt

COPY --from=build /dist/ /tmp/dist/
RUN python -m pip install -c /opt/bids-deface/constraints.txt \
      /tmp/dist/bids_deface-*.whl "bids-validator-deno==${BIDS_VALIDATOR_VERSION}" \
 && rm -rf /tmp/dist \
 && python -c "import torch; assert torch.__version__.split('+')[0] == '${TORCH_VERSION}', torch.__version__" \
 && python -c "from bids_deface.data import default_model_dir; print('model:', default_model_dir())" \
 && python -c "import torch; from bids_deface.data import default_model_dir as d; from bids_deface.engine import Network; \
r = Network(d(), torch.device('cpu')).backend; assert r.startswith('openvino '), r; print('CPU runtime:', r)"

# the face of refacing (--reface, docs/reface.md): TemplateFlow's MNI152NLin2009cAsym 1 mm
# head (not the brain-extracted image) and brain mask, fetched now so that nothing is
# downloaded at run time; readable by any uid. Without them refacing falls back to the face
# that ships in the wheel (models/FaceTemplate), and the build stops here to say so.
ENV TEMPLATEFLOW_HOME=/opt/templateflow
RUN python -c "import templateflow.api as tf; \
[tf.get('MNI152NLin2009cAsym', resolution=1, suffix=s, desc=d, extension='.nii.gz') for s, d in (('T1w', None), ('mask', 'brain'))]" \
 && python -c "from bids_deface.face_template import load_face_template as f; t = f(); \
assert t.source == 'templateflow', t.source; print('face:', t.name, t.path)" \
 && chmod -R a+rX /opt/templateflow

# the derivative's dataset_description.json names the image it was made with
RUN printf '{"Type": "docker", "Tag": "%s"}\n' "${IMAGE_TAG}" > /opt/bids-deface/container.json

# Non-root user. HOME stays writable for any uid (docker run -u "$(id -u):$(id -g)"), so
# caches (matplotlib, deno) have a place to go; Singularity/Apptainer sets its own HOME.
RUN useradd --create-home --home-dir /home/bidsdeface --uid 1000 --shell /bin/bash bidsdeface \
 && mkdir -p /home/bidsdeface/.config/matplotlib /home/bidsdeface/.cache/deno \
 && chown -R bidsdeface:bidsdeface /home/bidsdeface \
 && chmod -R a+rwX /home/bidsdeface

# deno's cache follows HOME ($HOME/.cache/deno)
ENV HOME=/home/bidsdeface \
    MPLCONFIGDIR=/home/bidsdeface/.config/matplotlib \
    DENO_NO_UPDATE_CHECK=1

USER bidsdeface
WORKDIR /home/bidsdeface

# smoke test as the runtime user; leaves the caches world-writable
RUN bids-deface --version && bids-validator-deno --version \
 && python -c "from bids_deface.bids.outputs import detect_container as d; assert d(), 'no container marker'; print(d())" \
 && chmod -R a+rwX /home/bidsdeface

ENTRYPOINT ["bids-deface"]
CMD ["--help"]
