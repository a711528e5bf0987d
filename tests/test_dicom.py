"""DICOM input: windowing, VOI LUT, MONOCHROME1, 16-bit; checked against direct NumPy computations."""

from __future__ import annotations

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid  # noqa: E402

from clinalign.cli import main  # noqa: E402
from clinalign.data import load_image, load_images_tensor  # noqa: E402
from clinalign.data.dicom import dicom_to_array, is_dicom, window_linear  # noqa: E402
from clinalign.errors import DataError  # noqa: E402


def _write(path, pixels: np.ndarray, **attributes) -> np.ndarray:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = attributes.pop("photometric", "MONOCHROME2")
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    for key, value in attributes.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return pixels


def _pixels(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4096, size=(16, 24)).astype(np.uint16)


def test_window_center_width_with_rescale_matches_numpy(tmp_path):
    raw = _write(
        tmp_path / "a.dcm",
        _pixels(),
        RescaleSlope=2,
        RescaleIntercept=-1024,
        WindowCenter=[1500, 40],
        WindowWidth=[2000, 400],
    )
    hu = raw.astype(np.float64) * 2 - 1024
    c, w = 1500.0, 2000.0
    expected = np.where(
        hu <= c - 0.5 - (w - 1) / 2, 0.0, np.where(hu > c - 0.5 + (w - 1) / 2, 1.0, ((hu - (c - 0.5)) / (w - 1) + 0.5))
    )
    np.testing.assert_allclose(dicom_to_array(tmp_path / "a.dcm"), expected, atol=1e-12)
    assert (expected == 0).sum() > 0 and (expected == 1).sum() > 0  # the window clips both ends here


def test_monochrome1_is_inverted_and_minmax_without_window(tmp_path):
    raw = _write(tmp_path / "m1.dcm", _pixels(1), photometric="MONOCHROME1")
    values = raw.astype(np.float64)
    expected = 1.0 - (values - values.min()) / (values.max() - values.min())
    np.testing.assert_allclose(dicom_to_array(tmp_path / "m1.dcm"), expected, atol=1e-12)


def test_voi_lut_sequence(tmp_path):
    lut = (np.sqrt(np.arange(256) / 255.0) * 1023).astype(np.uint16)  # a gamma LUT, 10-bit output
    item = Dataset()
    item.LUTDescriptor = [256, 1000, 10]
    item.add_new(0x00283006, "US", lut.tolist())  # LUTData as US values
    raw = _write(tmp_path / "lut.dcm", np.random.default_rng(2).integers(900, 1400, size=(8, 8)), VOILUTSequence=[item])
    index = np.clip(raw.astype(np.int64) - 1000, 0, 255)
    np.testing.assert_allclose(dicom_to_array(tmp_path / "lut.dcm"), lut[index] / 1023.0, atol=1e-12)


def test_every_consumer_sees_the_same_pixels(tmp_path):
    _write(tmp_path / "x.dcm", _pixels(3), WindowCenter=2000, WindowWidth=3000)
    expected = np.round(dicom_to_array(tmp_path / "x.dcm") * 255).astype(np.uint8)
    image = load_image(tmp_path / "x.dcm")  # MLLM (image_data_url), VAE (training data) and critic use this
    assert image.mode == "RGB" and image.size == (24, 16)
    np.testing.assert_array_equal(np.asarray(image)[..., 0], expected)
    tensor = load_images_tensor([tmp_path / "x.dcm"])  # the critic's embedding path
    np.testing.assert_allclose(tensor[0, 1].numpy(), expected / 255.0, atol=1e-6)
    # a DICOM without extension is recognised by its DICM marker
    (tmp_path / "noext").write_bytes((tmp_path / "x.dcm").read_bytes())
    assert is_dicom(tmp_path / "noext")
    np.testing.assert_array_equal(np.asarray(load_image(tmp_path / "noext")), np.asarray(image))


def test_window_width_one_and_invalid():
    np.testing.assert_array_equal(window_linear(np.array([9.0, 10.0, 11.0]), 10.0, 1.0), [0.0, 1.0, 1.0])
    with pytest.raises(DataError, match="WindowWidth"):
        window_linear(np.array([1.0]), 0.0, 0.5)


def test_malformed_dicom_exits_2_naming_the_file(tmp_path, tiny_clip_dir, capsys):
    _write(tmp_path / "good.dcm", _pixels(4))
    bad = tmp_path / "bad.dcm"
    bad.write_bytes((tmp_path / "good.dcm").read_bytes()[:400])  # truncated inside the header/pixels
    with pytest.raises(DataError, match=r"bad\.dcm"):
        load_image(bad)
    manifest = tmp_path / "m.csv"
    manifest.write_text("image,label,split\ngood.dcm,a,train\nbad.dcm,b,train\n")
    with pytest.raises(SystemExit) as info:
        main(
            [
                "probe",
                "train",
                "--critic",
                str(tiny_clip_dir),
                "--manifest",
                str(manifest),
                "--out",
                str(tmp_path / "p"),
            ]
        )
    err = capsys.readouterr().err
    assert info.value.code == 2 and "bad.dcm" in err and "Traceback" not in err
