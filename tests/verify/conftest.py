"""Shared fixtures of the verification tests: a small phantom (96^3 at 2.2 mm), MTCNN on one
CPU thread without FaceNet weights, and one verdict of the phantom with its face removed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ctadeface.segment import torch_settings
from ctadeface.training.phantom import Phantom, PhantomSpec, make_phantom
from ctadeface.verify import detect, identify, render, verdict

SPEC = PhantomSpec(shape=(96, 96, 96), spacing=(2.2, 2.2, 2.2))


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """MTCNN on one torch thread."""
    with torch_settings(1):
        yield


@pytest.fixture(scope="package")
def phantom() -> Phantom:
    return make_phantom(SPEC)


@pytest.fixture(scope="package")
def no_facenet(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment in which no FaceNet weights can be found."""
    empty = tmp_path_factory.mktemp("nofacenet")
    return {
        identify.FACENET_ENV: str(empty / "missing.pt"),
        "TORCH_HOME": str(empty),
        "XDG_CACHE_HOME": str(empty),
        "HOME": str(empty),
    }


@pytest.fixture(scope="package")
def detector() -> detect.FaceDetector:
    return detect.FaceDetector()


@pytest.fixture(scope="package")
def verifier(no_facenet: dict[str, str], detector: detect.FaceDetector) -> verdict.Verifier:
    """Face mask mode, the shipped gallery, no FaceNet."""
    mp = pytest.MonkeyPatch()
    for k, v in no_facenet.items():
        mp.setenv(k, v)
    try:
        return verdict.Verifier(detector=detector)
    finally:
        mp.undo()


@pytest.fixture(scope="package")
def checked(
    phantom: Phantom, verifier: verdict.Verifier
) -> tuple[verdict.Verification, list[render.Render], list[render.Render]]:
    """The phantom against itself with its exact face mask filled with air."""
    hu = phantom.hu()
    defaced = hu.copy()
    defaced[phantom.face] = -1000.0
    return verifier.verify(hu, defaced, phantom.affine)
