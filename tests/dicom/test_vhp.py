"""The real series: the Visible Human female head defaced as DICOM equals the BIDS App's defaced
NIfTI of the same head, voxel for voxel (read back with dcm2niix), and its SEG is the mask."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from tests import SHARED_DATA, VHP_HEAD

VHP_DICOM = SHARED_DATA / "dicom" / "vhp_female_head"
DCM2NIIX = shutil.which("dcm2niix") or str(Path(sys.executable).with_name("dcm2niix"))
OPTIONS = ("--no-verify", "--device", "cpu")

pytestmark = pytest.mark.skipif(
    not (VHP_DICOM.is_dir() and VHP_HEAD.is_file()), reason="no ../shared/data"
)


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """(BIDS output folder, DICOM output folder) of the default model on the shared head."""
    from ctadeface.cli import main as bids_main
    from ctadeface.dicom.cli import main as dicom_main

    root = tmp_path_factory.mktemp("vhp")
    bids = root / "bids"
    (bids / "sub-vhp" / "anat").mkdir(parents=True)
    (bids / "dataset_description.json").write_text(
        json.dumps({"Name": "vhp", "BIDSVersion": "1.10.0", "DatasetType": "raw"})
    )
    (bids / "sub-vhp" / "anat" / "sub-vhp_ct.nii.gz").symlink_to(VHP_HEAD)
    assert bids_main([str(bids), str(root / "derivatives"), "participant", *OPTIONS]) == 0
    assert dicom_main([str(VHP_DICOM), str(root / "dicom"), *OPTIONS]) == 0
    return root / "derivatives" / "sub-vhp" / "anat", root / "dicom"


def _series_folder(dicom_out: Path) -> Path:
    (folder,) = [p for p in dicom_out.iterdir() if p.name.startswith("series-")]
    return folder


@pytest.mark.skipif(not Path(DCM2NIIX).is_file(), reason="no dcm2niix")
def test_the_defaced_series_through_dcm2niix_equals_the_bids_apps_defaced_nifti(both, tmp_path):
    bids_out, dicom_out = both
    subprocess.run(
        [DCM2NIIX, "-z", "n", "-b", "n", "-f", "vhp", "-o", str(tmp_path),
         str(_series_folder(dicom_out) / "ct")],
        check=True, capture_output=True,
    )  # fmt: skip
    converted = nib.as_closest_canonical(nib.load(tmp_path / "vhp.nii"))
    defaced = nib.as_closest_canonical(nib.load(bids_out / "sub-vhp_desc-defaced_ct.nii.gz"))
    assert converted.shape == defaced.shape
    assert np.allclose(converted.affine, defaced.affine, atol=1e-3)
    assert np.array_equal(converted.get_fdata(), defaced.get_fdata())
    source = nib.as_closest_canonical(nib.load(VHP_HEAD))
    assert not np.array_equal(source.get_fdata(), defaced.get_fdata())  # the face is gone


def test_the_seg_opens_with_highdicom_and_is_the_bids_mask(both):
    import highdicom as hd

    from ctadeface.dicom import find_series, load_series

    bids_out, dicom_out = both
    folder = _series_folder(dicom_out)
    (series,), _ = find_series(folder / "ct")
    volume = load_series(series)
    seg = hd.seg.segread(folder / "seg.dcm")
    mask = np.zeros(volume.image.data.shape, bool)
    uids = [
        str(pydicom.dcmread(s.path, stop_before_pixels=True).SOPInstanceUID) for s in volume.slices
    ]
    stored = {
        str(ref.ReferencedSOPInstanceUID)
        for frame in seg.PerFrameFunctionalGroupsSequence
        for ref in frame.DerivationImageSequence[0].SourceImageSequence
    }
    for k, uid in enumerate(uids):
        if uid in stored:
            planes = seg.get_pixels_by_source_instance(
                source_sop_instance_uids=[uid], segment_numbers=[1]
            )
            mask[:, :, k] = planes[0, :, :, 0].T.astype(bool)
    reference = nib.load(bids_out / "sub-vhp_space-orig_label-face_mask.nii.gz")
    assert np.allclose(reference.affine, volume.image.affine, atol=1e-3)
    assert np.array_equal(mask, np.asarray(reference.dataobj).astype(bool))
