"""ctadeface.dicom.tilt: a tilted grid resampled untilted and back; ``--resample-tilt`` end to
end."""

from __future__ import annotations

import numpy as np
import pydicom

from ctadeface.dicom import find_series, load_series
from ctadeface.dicom.cli import main
from ctadeface.dicom.tilt import is_tilted, tilt_degrees, untilt
from ctadeface.io import CTImage
from tests.dicom.make import write_series
from tests.dicom.test_cli import FAST
from tests.test_robustness import phantom_hu, stored


def _tilted_image(shape=(40, 36, 30), step=(0.0, 0.6, 2.0)) -> CTImage:
    """A ball of 200 HU in air on a grid whose slice step shifts 0.6 mm along j (16.7 deg)."""
    import nibabel as nib

    affine = np.eye(4)
    affine[:3, 2] = step
    ijk = np.indices(shape).reshape(3, -1)
    world = (affine[:3, :3] @ ijk + affine[:3, 3:]).reshape(3, *shape)
    centre = np.array([20.0, 30.0, 30.0])[:, None, None, None]
    ball = np.linalg.norm(world - centre, axis=0) < 12.0
    data = np.where(ball, 200, -1000).astype(np.int16)
    header = nib.Nifti1Header()
    header.set_data_dtype(np.int16)
    spacing = tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))
    return CTImage(None, data, affine, header, 1.0, 0.0, spacing)  # type: ignore[arg-type]


def _centre(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    ijk = np.argwhere(mask).mean(axis=0)
    return affine[:3, :3] @ ijk + affine[:3, 3]


def test_the_untilted_grid_holds_the_same_object_at_the_same_place():
    image = _tilted_image()
    assert is_tilted(image.affine) and abs(tilt_degrees(image.affine) - 16.7) < 0.1
    moved = untilt(image)
    assert not is_tilted(moved.image.affine)
    assert np.allclose(moved.image.spacing, (1.0, 1.0, 2.0))
    ball = image.data > 0
    moved_ball = moved.image.data > -400  # half way between ball and air
    assert abs(int(moved_ball.sum()) * 2.0 - int(ball.sum()) * 2.0) / (ball.sum() * 2.0) < 0.03
    assert np.allclose(
        _centre(moved_ball, moved.image.affine), _centre(ball, image.affine), atol=0.3
    )
    back = moved.back(moved_ball)
    dice = 2 * (back & ball).sum() / (back.sum() + ball.sum())
    assert back.shape == ball.shape and dice > 0.97
    assert moved.image.data.dtype == np.int16 and moved.image.data.min() == -1000


def _tilted_phantom(folder, shift_mm: float = 0.5) -> None:
    hu, _ = phantom_hu(1)
    n = hu.shape[2]
    spacing = (4.0, 4.0, 4.0)
    positions = [(0.0, k * shift_mm, -k * spacing[2]) for k in range(n)]
    write_series(
        folder,
        stored(hu, "int16", 1.0, -1024.0),
        spacing=spacing,
        orientation=(1.0, 0.0, 0.0, 0.0, -1.0, 0.0),
        positions=positions,
        inter=-1024.0,
    )


def test_a_tilted_series_is_refused_unless_resampling_is_asked_for(tmp_path, capsys):
    _tilted_phantom(tmp_path / "in")
    code = main([str(tmp_path / "in"), str(tmp_path / "refused"), *FAST])
    err = capsys.readouterr().err
    assert code == 65 and "gantry tilt" in err and "--resample-tilt" in err
    code = main([str(tmp_path / "in"), str(tmp_path / "out"), *FAST, "--resample-tilt"])
    assert code == 0
    (source,), _ = find_series(tmp_path / "in")
    (written,), _ = find_series(tmp_path / "out")
    before, after = load_series(source, tilt=True), load_series(written, tilt=True)
    assert np.allclose(before.image.affine, after.image.affine)  # the tilted geometry kept
    changed = before.image.data != after.image.data
    assert 0 < changed.mean() < 0.5
    first = pydicom.dcmread(written.files[0])
    assert "untilted grid (gantry tilt 7.1 deg)" in first.DerivationDescription
