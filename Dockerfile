# ctadeface BIDS App image.
#   docker build -t ctadeface:0.4.0 .                       # with the published CTA-DEFACE weights
#   docker build --build-arg FETCH_CTA_DEFACE=0 -t ctadeface:0.4.0 .   # without them
# Run (no network needed): docker run --rm --gpus all -v /bids:/data:ro -v /out:/out \
#   ctadeface:0.4.0 /data /out participant --participant-label 01

# A CUDA PyTorch base, pinned by tag (pin by digest too for a release build).
ARG BASE_IMAGE=pytorch/pytorch:2.9.1-cuda12.8-cudnn9-runtime
FROM ${BASE_IMAGE}

ARG CTADEFACE_VERSION=0.4.0
# The published CTA-DEFACE weights (Mahmutoglu et al. 2024; no licence file: they are fetched at
# your build, never redistributed by us). Every file is checked against the sha256 pinned in
# ctadeface/segment/models.py (the same values as CTA_DEFACE_CHECKPOINT_SHA256 below) before it
# is kept.
ARG FETCH_CTA_DEFACE=1
ARG CTA_DEFACE_URL=https://github.com/robert-graf/VibeSegmentator/releases/download/v1.0.0/001.zip
ARG CTA_DEFACE_CHECKPOINT_SHA256=265afd7a1592cd4c43d093b40aa7fbe231a759ab900bba45a84798dfea90e1e5
# FaceNet (InceptionResnetV1, VGGFace2) weights for the verification's similarity score, fetched
# at build time like facenet-pytorch itself would at run time (which we never do). Set
# FACENET_SHA256 to check the file; FETCH_FACENET=0 skips it (the similarity is then recorded as
# "not available").
ARG FETCH_FACENET=1
ARG FACENET_URL=https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180402-114759-vggface2.pt
ARG FACENET_SHA256=

LABEL org.opencontainers.image.title="ctadeface" \
      org.opencontainers.image.version="${CTADEFACE_VERSION}" \
      org.opencontainers.image.description="Remove faces from CT angiography (BIDS App)" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    nnUNet_raw=/opt/nnunet/raw \
    nnUNet_preprocessed=/opt/nnunet/preprocessed \
    nnUNet_results=/opt/nnunet/results \
    CTADEFACE_MODELS_DIR=/opt/ctadeface/models \
    CTADEFACE_FACENET_WEIGHTS=/opt/ctadeface/facenet/20180402-114759-vggface2.pt \
    CTADEFACE_CONTAINER_TYPE=docker \
    CTADEFACE_CONTAINER_TAG=ctadeface:${CTADEFACE_VERSION}

WORKDIR /opt/ctadeface/src
COPY requirements/app.txt requirements/verify.txt requirements/
RUN python -m pip install -r requirements/app.txt \
 && grep -v '^torchvision' requirements/verify.txt > /tmp/verify.txt \
 && python -m pip install --no-deps -r /tmp/verify.txt
COPY pyproject.toml README.md version run.py ./
COPY ctadeface ./ctadeface
RUN python -m pip install --no-deps . \
 && install -m 0755 run.py /opt/ctadeface/run.py \
 && cp version /version \
 && test "$(cat /version)" = "${CTADEFACE_VERSION}"

# Build-time download of the published weights (the only network access of this image).
RUN if [ "${FETCH_CTA_DEFACE}" = "1" ]; then \
      python -m ctadeface.segment.models install cta-deface --from "${CTA_DEFACE_URL}" \
        --dest "${CTADEFACE_MODELS_DIR}" \
        --expect-checkpoint-sha256 "${CTA_DEFACE_CHECKPOINT_SHA256}" ; \
    else echo "skipping the CTA-DEFACE weights (FETCH_CTA_DEFACE=${FETCH_CTA_DEFACE})"; fi \
 && python -m ctadeface.segment.models
RUN if [ "${FETCH_FACENET}" = "1" ]; then \
      mkdir -p "$(dirname "${CTADEFACE_FACENET_WEIGHTS}")" \
      && python -c "import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])" \
           "${FACENET_URL}" "${CTADEFACE_FACENET_WEIGHTS}" \
      && if [ -n "${FACENET_SHA256}" ]; then \
           echo "${FACENET_SHA256}  ${CTADEFACE_FACENET_WEIGHTS}" | sha256sum -c - ; fi ; \
    else echo "skipping the FaceNet weights (FETCH_FACENET=${FETCH_FACENET})"; fi

# Runs as any non-root user and with --read-only (only the output folder is written; mount a
# tmpfs at /tmp for --work-dir if you use model zips).
RUN useradd --uid 1000 --no-create-home --shell /usr/sbin/nologin ctadeface || true
USER 1000
WORKDIR /tmp
# DICOM series: docker run --entrypoint ctadeface-dicom ... INPUT OUTPUT [options]
ENTRYPOINT ["/opt/ctadeface/run.py"]
CMD ["--help"]
