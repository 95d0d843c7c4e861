"""Identity on skin renders: can a face-recognition network still tell who it is?

dlib's face-recognition ResNet describes a render's face (a 128-d descriptor, at a face box,
aligned by dlib's 5-point landmarks). A photo threshold on the descriptor distance (dlib's 0.6)
means nothing on CT renders (``docs/verification.md``), so identity is judged by *rank*: an
attacker holds the original scan and a gallery of other people's heads, and asks, per camera
direction (yaw), whether the defaced render is nearer to its own original than to every head of
the gallery (mean distances over the isosurface levels rendered at that yaw: the levels of one
yaw are nearly the same picture, so the yaw is the independent trial). :func:`identity_test`
counts the yaws where it is (rank 1), against the chance of that yaw (1 / (1 + gallery heads
seen there)), with a one-sided test of the count (Poisson-binomial tail, a binomial where every
yaw has the same chance). :func:`rank_views` ranks each render alone, for the record.

The gallery (``ctadeface/data/gallery/``, built by ``python -m ctadeface.training.gallery``)
holds descriptors only, no images: for each head and view (isosurface level, yaw) the descriptor
at that head's own face box, NaN where no detector found a face.

FaceNet (VGGFace2): where its weights are on disk, the mean cosine similarity of original and
defaced renders cropped at the original's face box is recorded beside.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from scipy import ndimage

from ctadeface.verify.detect import Box, dlib_model, import_dlib
from ctadeface.verify.render import Render

log = logging.getLogger(__name__)

#: A view of the renders: (isosurface level HU, yaw degrees).
View = tuple[float, float]

#: A group of views ranked together (a view, or a yaw).
K = TypeVar("K")

#: The gallery shipped with the package.
GALLERY = Path(__file__).resolve().parents[1] / "data" / "gallery" / "gallery.npz"
#: A gallery head whose descriptors lie this close to the original's at every view both have is
#: the scan itself (the same renders give the same descriptors) and is left out of its test.
SAME_SCAN_DISTANCE = 0.05
#: The identity test is positive (``identifiable``) below this one-sided p.
ALPHA = 0.05

#: FaceNet (InceptionResnetV1, VGGFace2) weights: file name facenet-pytorch caches, and the
#: environment variable that may name the file. They are never downloaded.
FACENET_FILE = "20180402-114759-vggface2.pt"
FACENET_ENV = "CTADEFACE_FACENET_WEIGHTS"
#: Face-crop size of FaceNet, pixels.
FACENET_PX = 160


class Describer:
    """dlib's face-recognition ResNet with its 5-point landmark aligner."""

    def __init__(self) -> None:
        dlib = import_dlib()
        self._dlib = dlib
        self._landmarks = dlib.shape_predictor(
            str(dlib_model("shape_predictor_5_face_landmarks.dat"))
        )
        self._net = dlib.face_recognition_model_v1(
            str(dlib_model("dlib_face_recognition_resnet_model_v1.dat"))
        )

    def describe(self, image: np.ndarray, box: Box) -> np.ndarray:
        """The 128-d float32 descriptor of the face at ``box`` of a gray picture."""
        rgb = np.ascontiguousarray(np.repeat(image[:, :, None], 3, axis=2))
        rect = self._dlib.rectangle(*(round(v) for v in box))
        shape = self._landmarks(rgb, rect)
        return np.asarray(self._net.compute_face_descriptor(rgb, shape), dtype=np.float32)

    def describe_all(
        self, renders: Sequence[Render], boxes: Sequence[Box | None]
    ) -> dict[View, np.ndarray]:
        """The descriptor of each render that has a box, by view."""
        return {
            (r.threshold_hu, r.yaw_deg): self.describe(r.image, box)
            for r, box in zip(renders, boxes, strict=True)
            if box is not None
        }


@dataclass(frozen=True)
class Gallery:
    """Descriptors of other people's heads.

    Attributes:
        views: the views, in the order of ``descriptors``' second axis.
        names: one name per head (where it came from).
        descriptors: float32 (heads, views, 128), NaN where no face was found.
    """

    views: tuple[View, ...]
    names: tuple[str, ...]
    descriptors: np.ndarray

    @classmethod
    def load(cls, path: Path = GALLERY) -> Gallery:
        with np.load(path) as data:
            views = tuple((float(t), float(y)) for t, y in data["views"])
            return cls(views, tuple(str(n) for n in data["names"]), data["descriptors"])

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            path,
            views=np.asarray(self.views, np.float32),
            names=np.asarray(self.names),
            descriptors=self.descriptors.astype(np.float32),
        )

    def without(self, own: Mapping[View, np.ndarray]) -> Gallery:
        """This gallery less the heads that are the scan ``own`` describes (within
        :data:`SAME_SCAN_DISTANCE` at every view both have)."""
        keep = []
        for h in range(len(self.names)):
            close = [
                float(np.linalg.norm(self.descriptors[h, v] - own[view]))
                for v, view in enumerate(self.views)
                if view in own and not np.isnan(self.descriptors[h, v, 0])
            ]
            keep.append(not close or max(close) >= SAME_SCAN_DISTANCE)
        index = np.flatnonzero(keep)
        return Gallery(self.views, tuple(self.names[i] for i in index), self.descriptors[index])


@dataclass(frozen=True)
class IdentityResult:
    """Whether probes pick out their own enrolled originals among a gallery.

    A view here is what was ranked: a camera direction (yaw, its levels together) in
    :func:`identity_test`, one render where per-render ranks are summarised.

    Attributes:
        views_tested: views with a probe, an enrolled original and at least one gallery head.
        rank1_views: of those, the views where the own original is the nearest.
        chance: the mean chance of a rank-1 view (1 / (1 + gallery heads seen there)).
        p: one-sided p of ``rank1_views`` or more by chance (1.0 when nothing was tested).
        gallery_heads: heads in the gallery after the scan itself was left out.
    """

    views_tested: int
    rank1_views: int
    chance: float
    p: float
    gallery_heads: int

    @property
    def identified(self) -> bool:
        """The test is positive: more rank-1 views than chance explains (p < ALPHA)."""
        return self.p < ALPHA


def upper_tail(hits: int, chances: Sequence[float]) -> float:
    """P(X >= hits) for X a sum of independent Bernoulli(chances) (Poisson-binomial; the
    binomial when all chances are equal), exactly."""
    pmf = np.zeros(len(chances) + 1)
    pmf[0] = 1.0
    for p in chances:
        pmf[1:] = pmf[1:] * (1 - p) + pmf[:-1] * p
        pmf[0] *= 1 - p
    return float(min(1.0, max(0.0, pmf[hits:].sum())))


def rank_views(
    probes: Mapping[View, np.ndarray],
    enrolled: Mapping[View, np.ndarray],
    gallery: Gallery,
    *,
    enrolled_view: Mapping[View, View] | None = None,
) -> dict[View, tuple[bool, float]]:
    """Per probe render: (is the probe nearer to its enrolled original than to every gallery
    head, the chance of that). ``enrolled_view`` maps a probe's view to the view its original
    and the gallery are taken at (default: the same view). Views without an enrolled original
    or without any gallery head are left out."""
    return _rank(probes, enrolled, gallery, enrolled_view, group=lambda view: view)


def rank_yaws(
    probes: Mapping[View, np.ndarray],
    enrolled: Mapping[View, np.ndarray],
    gallery: Gallery,
    *,
    enrolled_view: Mapping[View, View] | None = None,
) -> dict[float, tuple[bool, float]]:
    """Per yaw (a camera direction, its isosurface levels together): (is the probe's mean
    distance to its enrolled original over the levels tested at that yaw smaller than its mean
    distance to every gallery head over the levels that head was seen at, the chance of that:
    1 / (1 + gallery heads seen at any of those levels)). The levels of one yaw are nearly the
    same picture, so the yaw, not the render, is the independent trial of the test
    (``docs/verification.md``)."""
    return _rank(probes, enrolled, gallery, enrolled_view, group=lambda view: view[1])


def _rank(
    probes: Mapping[View, np.ndarray],
    enrolled: Mapping[View, np.ndarray],
    gallery: Gallery,
    enrolled_view: Mapping[View, View] | None,
    group: Callable[[View], K],
) -> dict[K, tuple[bool, float]]:
    """Rank 1 and chance per group of probe views, by mean distances over the group."""
    index = {view: i for i, view in enumerate(gallery.views)}
    pairs: dict[K, list[tuple[np.ndarray, View]]] = {}
    for view, probe in probes.items():
        target = enrolled_view.get(view, view) if enrolled_view else view
        if target in enrolled and target in index:
            pairs.setdefault(group(view), []).append((probe, target))
    out = {}
    for key, members in pairs.items():
        # (members, heads) distances to the gallery, NaN where a head was not seen
        others = np.stack(
            [
                np.linalg.norm(gallery.descriptors[:, index[target]] - probe, axis=1)
                for probe, target in members
            ]
        )
        seen = ~np.isnan(others).all(axis=0)
        if not seen.any():
            continue
        own = float(np.mean([np.linalg.norm(probe - enrolled[t]) for probe, t in members]))
        nearest_other = float(np.min(np.nanmean(others[:, seen], axis=0)))
        out[key] = (own < nearest_other, 1.0 / (1 + int(seen.sum())))
    return out


def summarise(ranks: Mapping[Any, tuple[bool, float]], gallery: Gallery) -> IdentityResult:
    """The identity test of per-yaw ranks (:func:`rank_yaws`; per-render ranks give the test
    as if every render were an independent trial)."""
    hits = sum(hit for hit, _ in ranks.values())
    chances = [chance for _, chance in ranks.values()]
    p = upper_tail(hits, chances) if chances else 1.0
    chance = float(np.mean(chances)) if chances else 0.0
    return IdentityResult(len(chances), hits, chance, p, len(gallery.names))


def identity_test(
    probes: Mapping[View, np.ndarray],
    enrolled: Mapping[View, np.ndarray],
    gallery: Gallery,
    *,
    enrolled_view: Mapping[View, View] | None = None,
) -> IdentityResult:
    """In how many yaws the probes rank their own original first among the gallery, against
    chance (:func:`rank_yaws`, :func:`summarise`)."""
    return summarise(rank_yaws(probes, enrolled, gallery, enrolled_view=enrolled_view), gallery)


def facenet_weights_path() -> Path | None:
    """The FaceNet VGGFace2 state dict on disk, or None: ``$CTADEFACE_FACENET_WEIGHTS``, then
    facenet-pytorch's cache (``$TORCH_HOME`` or ``$XDG_CACHE_HOME/torch`` or ``~/.cache/torch``,
    ``checkpoints/20180402-114759-vggface2.pt``)."""
    for p in _facenet_candidates():
        if p.is_file():
            return p
    return None


def _facenet_candidates() -> list[Path]:
    out = []
    if os.environ.get(FACENET_ENV):
        out.append(Path(os.environ[FACENET_ENV]).expanduser())
    homes = [os.environ.get("TORCH_HOME")]
    homes.append(os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "torch"))
    homes.append("~/.cache/torch")
    for h in homes:
        if h:
            p = Path(h).expanduser() / "checkpoints" / FACENET_FILE
            if p not in out:
                out.append(p)
    return out


class FaceNet:
    """FaceNet identity embeddings, when their weights are on disk (``status`` says why not)."""

    def __init__(self, *, weights: Path | None = None, device: str = "cpu") -> None:
        import torch
        from facenet_pytorch import InceptionResnetV1

        self._torch = torch
        self._device = device
        self._net: Any = None
        path = Path(weights) if weights else facenet_weights_path()
        if path is None or not path.is_file():
            where = path or " or ".join(str(p) for p in _facenet_candidates())
            self.status = f"not available: FaceNet weights not found at {where}"
            return
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = {k: v for k, v in state.items() if not k.startswith("logits.")}
            net = InceptionResnetV1(pretrained=None, classify=False)
            net.load_state_dict(state)
        except Exception as e:  # a corrupt or foreign file: verification goes on without it
            self.status = f"not available: cannot load FaceNet weights {path} ({e})"
            log.warning("%s", self.status)
            return
        self._net = net.eval().to(device)
        self.status = f"available: {path}"

    @property
    def available(self) -> bool:
        return self._net is not None

    def similarity(
        self,
        renders_a: Sequence[Render],
        renders_b: Sequence[Render],
        boxes: Sequence[Box | None],
    ) -> float | None:
        """Mean cosine similarity of FaceNet embeddings of paired renders, both cropped at
        ``boxes`` (the first render's faces); None when FaceNet is not available or no pair
        has a box."""
        if self._net is None:
            return None
        crops_a, crops_b = [], []
        for ra, rb, box in zip(renders_a, renders_b, boxes, strict=True):
            if box is None or ra.image.shape != rb.image.shape:
                continue
            crops_a.append(_face_crop(ra.image, box))
            crops_b.append(_face_crop(rb.image, box))
        if not crops_a:
            return None
        torch = self._torch
        with torch.no_grad():
            xa = torch.from_numpy(np.stack(crops_a)).to(self._device)
            xb = torch.from_numpy(np.stack(crops_b)).to(self._device)
            cos = torch.nn.functional.cosine_similarity(self._net(xa), self._net(xb), dim=1)
        return float(cos.mean())


def _face_crop(image: np.ndarray, box: Box) -> np.ndarray:
    """A (3, 160, 160) float32 FaceNet input: the box (x0, y0, x1, y1) of a gray picture,
    resized and standardised like facenet-pytorch ((v - 127.5) / 128)."""
    x0, y0, x1, y1 = box
    h, w = image.shape
    c0, c1 = max(0, math.floor(x0)), min(w, math.ceil(x1))
    r0, r1 = max(0, math.floor(y0)), min(h, math.ceil(y1))
    patch = image[r0:r1, c0:c1].astype(np.float32)
    if patch.size == 0:
        patch = np.zeros((1, 1), np.float32)
    z = (FACENET_PX / patch.shape[0], FACENET_PX / patch.shape[1])
    patch = ndimage.zoom(patch, z, order=1, mode="nearest", grid_mode=True)[
        :FACENET_PX, :FACENET_PX
    ]
    patch = np.pad(patch, ((0, FACENET_PX - patch.shape[0]), (0, FACENET_PX - patch.shape[1])))
    return np.repeat(((patch - 127.5) / 128.0)[None], 3, axis=0).astype(np.float32)
