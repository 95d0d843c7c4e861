"""ctadeface.outputs: derivative names, PHI scrubbing, sidecars, up-to-date checks."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

import pytest

from ctadeface.discover import Scan
from ctadeface.outputs import (
    DEMOGRAPHIC_FIELDS,
    PHI_FIELDS,
    PROVENANCE_KEY,
    bids_name,
    dataset_description,
    defaced_sidecar,
    is_up_to_date,
    mask_sidecar,
    output_paths,
    scrub,
    to_json,
)
from ctadeface.provenance import OutputHashes
from tests import records


def _scan(entities, suffix="ct", datatype="anat", metadata=None, extension=".nii.gz") -> Scan:
    ents = tuple(entities)
    d = dict(ents)
    folder = f"sub-{d['sub']}" + (f"/ses-{d['ses']}" if "ses" in d else "") + f"/{datatype}"
    stem = "_".join(f"{k}-{v}" for k, v in ents)
    return Scan(
        path=Path("/raw") / folder / f"{stem}_{suffix}{extension}",
        relpath=f"{folder}/{stem}_{suffix}{extension}",
        subject=d["sub"],
        session=d.get("ses"),
        entities=ents,
        suffix=suffix,
        datatype=datatype,
        extension=extension,
        metadata=MappingProxyType(dict(metadata or {})),
        sidecars=(),
        problem=None,
    )


def test_names_follow_outputs_md():
    scan = _scan([("sub", "01"), ("ses", "1"), ("acq", "cta"), ("ce", "iodine")])
    p = output_paths(Path("/out"), scan)
    base = "/out/sub-01/ses-1/anat/sub-01_ses-1_acq-cta_ce-iodine"
    assert str(p.defaced) == f"{base}_desc-defaced_ct.nii.gz"
    assert str(p.defaced_json) == f"{base}_desc-defaced_ct.json"
    assert str(p.mask) == f"{base}_space-orig_label-face_mask.nii.gz"
    assert str(p.mask_json) == f"{base}_space-orig_label-face_mask.json"
    figure = "/out/sub-01/figures/sub-01_ses-1_acq-cta_ce-iodine_desc-deface_render.png"
    assert str(p.figure) == figure


def test_names_keep_ct_folder_upper_suffix_and_entity_order():
    scan = _scan([("sub", "02"), ("run", "1"), ("chunk", "2")], suffix="CT", datatype="ct",
                 extension=".nii")  # fmt: skip
    p = output_paths(Path("/out"), scan)
    assert p.defaced.name == "sub-02_run-1_chunk-2_desc-defaced_CT.nii"
    assert p.mask.name == "sub-02_run-1_space-orig_chunk-2_label-face_mask.nii.gz"
    assert p.defaced.parent == Path("/out/sub-02/ct")
    assert bids_name([("sub", "1")], {"desc": "x", "acq": "y"}, "ct") == "sub-1_acq-y_desc-x_ct"


def test_scrub_removes_every_listed_field_case_insensitively():
    meta = {k: "secret" for k in PHI_FIELDS} | {"patientname": "x", "KVP": 120, "PatientSex": "F"}
    clean, removed = scrub(meta)
    assert clean == {"KVP": 120, "PatientSex": "F"}
    assert set(removed) == set(PHI_FIELDS) | {"patientname"}
    clean2, _ = scrub(meta, remove_demographics=True)
    assert clean2 == {"KVP": 120}
    assert "PatientSex" in DEMOGRAPHIC_FIELDS


def test_sidecars_carry_sources_and_provenance():
    scan = _scan([("sub", "01")], metadata={"PatientName": "Doe^Jane", "KVP": 100})
    sidecar, removed = defaced_sidecar(scan, records.provenance(input_sha256="abc"))
    assert removed == ["PatientName"]
    assert sidecar["KVP"] == 100 and "PatientName" not in sidecar
    assert sidecar["Sources"] == ["bids:raw:sub-01/anat/sub-01_ct.nii.gz"]
    assert sidecar[PROVENANCE_KEY]["InputSHA256"] == "abc"
    assert sidecar[PROVENANCE_KEY]["RemovedSidecarFields"] == ["PatientName"]
    json.loads(to_json(sidecar))  # strict JSON
    m = mask_sidecar(scan)
    assert m["Type"] == "Face" and m["SpatialReference"] == "bids:raw:sub-01/anat/sub-01_ct.nii.gz"


def test_dataset_description_is_a_derivative_linking_raw(tmp_path):
    desc = dataset_description(tmp_path, {"Type": "docker", "Tag": "ctadeface:1"})
    assert desc["DatasetType"] == "derivative"
    assert desc["GeneratedBy"][0]["Name"] == "ctadeface"
    assert desc["GeneratedBy"][0]["Container"] == {"Type": "docker", "Tag": "ctadeface:1"}
    assert desc["DatasetLinks"]["raw"] == tmp_path.resolve().as_uri()
    assert "Container" not in dataset_description(tmp_path, None)["GeneratedBy"][0]


def test_up_to_date_needs_all_files_matching_hashes_and_the_same_request(tmp_path):
    from ctadeface.io import sha256_file

    scan = _scan([("sub", "01")])
    p = output_paths(tmp_path, scan)
    request = records.request()
    assert not is_up_to_date(p, request)
    p.defaced.parent.mkdir(parents=True)
    for f in (p.defaced, p.mask, p.mask_json):
        f.write_bytes(f.name.encode())
    hashes = OutputHashes(defaced=sha256_file(p.defaced), mask=sha256_file(p.mask))
    sidecar, _ = defaced_sidecar(scan, records.provenance(request=request, output_sha256=hashes))
    p.defaced_json.write_text(to_json(sidecar))
    assert is_up_to_date(p, request)
    assert not is_up_to_date(p, replace(request, input_sha256="other input"))
    assert not is_up_to_date(p, replace(request, fill="air"))
    assert not is_up_to_date(p, replace(request, inference="exact"))
    p.mask.write_bytes(b"tampered")
    assert not is_up_to_date(p, request)


@pytest.mark.parametrize("content", ["not json", "[]", '{"Defacing": 3}'])
def test_unreadable_provenance_means_redo(tmp_path, content):
    scan = _scan([("sub", "01")])
    p = output_paths(tmp_path, scan)
    p.defaced.parent.mkdir(parents=True)
    for f in p.images_and_sidecars():
        f.write_text(content)
    assert not is_up_to_date(p, records.request())
