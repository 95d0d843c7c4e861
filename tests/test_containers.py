"""What can be checked of the container recipes without a container engine."""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VERSION = (ROOT / "version").read_text().strip()


def _read(name: str) -> str:
    return (ROOT / name).read_text()


def _arg(dockerfile: str, name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S+)$", dockerfile, re.M)
    assert match, f"Dockerfile has no ARG {name}"
    return match.group(1)


def test_both_recipes_name_the_version_file():
    docker = _read("Dockerfile")
    singularity = _read("Singularity.def")
    assert _arg(docker, "CTADEFACE_VERSION") == VERSION
    assert re.search(rf"^From: ctadeface:{re.escape(VERSION)}$", singularity, re.M)
    assert re.search(rf"org.opencontainers.image.version {re.escape(VERSION)}$", singularity, re.M)
    assert "cp version /version" in docker


def test_entrypoint_is_the_executable_run_py():
    docker = _read("Dockerfile")
    assert 'ENTRYPOINT ["/opt/ctadeface/run.py"]' in docker
    assert "install -m 0755 run.py /opt/ctadeface/run.py" in docker
    run_py = ROOT / "run.py"
    assert os.access(run_py, os.X_OK)
    assert run_py.read_text().startswith("#!/usr/bin/env python3")
    assert 'exec /opt/ctadeface/run.py "$@"' in _read("Singularity.def")


def test_published_weights_build_arg_and_checksum_are_wired():
    from ctadeface.segment import models

    docker = _read("Dockerfile")
    entry = models.REGISTRY["cta-deface"]
    pinned = {path: sha for path, (_, sha) in entry.files.items()}
    checkpoint = next(sha for path, sha in pinned.items() if path.endswith("checkpoint_final.pth"))
    assert _arg(docker, "CTA_DEFACE_CHECKPOINT_SHA256") == checkpoint
    assert _arg(docker, "FETCH_CTA_DEFACE") == "1"
    assert _arg(docker, "CTA_DEFACE_URL").startswith("https://")
    assert '--from "${CTA_DEFACE_URL}"' in docker
    assert '--expect-checkpoint-sha256 "${CTA_DEFACE_CHECKPOINT_SHA256}"' in docker
    assert 'if [ "${FETCH_CTA_DEFACE}" = "1" ]' in docker


def test_image_runs_as_non_root_without_network_at_run_time():
    docker = _read("Dockerfile")
    users = re.findall(r"^USER (\S+)$", docker, re.M)
    assert users and users[-1] not in ("root", "0")
    assert "CTADEFACE_MODELS_DIR=/opt/ctadeface/models" in docker
    assert ".venv" in _read(".dockerignore")


def test_image_installs_verification_and_fetches_facenet_at_build_time():
    docker = _read("Dockerfile")
    assert "requirements/verify.txt" in docker and "--no-deps -r /tmp/verify.txt" in docker
    assert _arg(docker, "FETCH_FACENET") == "1"
    assert _arg(docker, "FACENET_URL").startswith("https://")
    from ctadeface.verify.identify import FACENET_ENV

    pins = _read("requirements/verify.txt")  # dlib's detectors and recognition models, offline
    assert "dlib-bin==" in pins and "face-recognition-models==" in pins

    assert f"{FACENET_ENV}=/opt/ctadeface/facenet/" in docker
    assert '"${FACENET_URL}" "${CTADEFACE_FACENET_WEIGHTS}"' in docker
