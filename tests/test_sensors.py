"""Sensor normalisation on synthetic arrays with known answers and on the real tiles."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import rasterio

from earthgpt.sensors import (
    SAR_DB_RANGES,
    Sensor,
    colormap_display,
    detect_sensor,
    percentile_stretch,
    sar_composite,
    sar_to_db,
    scale_fixed,
    select_rgb_bands,
    to_display_rgb,
    to_model_rgb,
    valid_mask,
)


def _read(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        src = rasterio.open(path)
    with src:
        return src.read(), src.nodata, src.colorinterp, src.descriptions


def test_percentile_stretch_maps_percentiles_to_ends_and_ignores_nan_and_nodata():
    band = np.arange(100, dtype=np.float32).reshape(1, 10, 10)
    band[0, 0, :3] = [np.nan, np.inf, -np.inf]
    band[0, 9, 9] = 1e9  # an outlier, marked invalid below: it must not move the percentiles
    valid = np.ones((10, 10), dtype=bool)
    valid[9, 9] = False
    out = percentile_stretch(band, valid=valid)
    values = band[0][valid & np.isfinite(band[0])]
    lo, hi = np.percentile(values, [2, 98])
    assert out.dtype == np.uint8
    assert out[0, 0, :3].tolist() == [0, 0, 0] and out[0, 9, 9] == 0
    expected = np.clip((band[0, 5, 5] - lo) * 255 / (hi - lo), 0, 255)
    assert abs(int(out[0, 5, 5]) - expected) <= 1
    assert out[0, 9, 8] == 255  # above the 98th percentile: saturated


def test_percentile_stretch_constant_and_empty_bands_do_not_divide_by_zero():
    array = np.stack([np.full((4, 4), 7.0), np.full((4, 4), np.nan)])
    with np.errstate(all="raise"):
        out = percentile_stretch(array)
    assert (out == 0).all()  # NaN in band 2 makes every pixel invalid
    out = percentile_stretch(np.full((1, 4, 4), 10000, dtype=np.uint16))
    assert (out == 128).all()
    sparse = np.zeros((1, 10, 10), dtype=np.uint8)
    sparse[0, 0, 0] = 9  # 99 % zeros: the 2nd and 98th percentiles coincide
    out = percentile_stretch(sparse)
    assert out[0, 0, 0] == 255 and out[0, 5, 5] == 0


def test_valid_mask_needs_every_band_nodata_and_any_band_nan():
    array = np.zeros((3, 2, 2), dtype=np.float32)
    array[0, 0, 1] = 5  # one band holds data: the pixel is valid
    array[1, 1, 1] = np.nan
    ok = valid_mask(array, nodata=0)
    assert ok.tolist() == [[False, True], [False, False]]


def test_bad_shapes_and_dtypes_raise_clear_errors():
    with pytest.raises(ValueError, match="got 0"):
        to_model_rgb(np.zeros((0, 4, 4)), Sensor.optical)
    with pytest.raises(ValueError, match="complex"):
        to_model_rgb(np.zeros((1, 4, 4), dtype=np.complex64), Sensor.sar)
    with pytest.raises(ValueError, match="shape"):
        to_model_rgb(np.zeros((1, 1, 4, 4)), Sensor.optical)
    with pytest.raises(ValueError, match="non-empty"):
        to_model_rgb(np.zeros((3, 0, 4)), Sensor.optical)
    with pytest.raises(ValueError, match="got 2"):
        to_model_rgb(np.ones((2, 4, 4)), Sensor.optical)
    with pytest.raises(ValueError, match="1 band for an infrared"):
        to_model_rgb(np.ones((3, 4, 4)), Sensor.infrared)


def test_sar_to_db_handles_zero_negative_and_nan():
    db = sar_to_db(np.array([1.0, 0.1, 0.0, -0.01, np.nan, np.inf], dtype=np.float32), floor_db=-50)
    assert db[:2].tolist() == pytest.approx([0.0, -10.0], abs=1e-5)
    assert db[2] == pytest.approx(-50) and db[3] == pytest.approx(-50)
    assert np.isnan(db[4]) and np.isnan(db[5])


def test_scale_fixed_is_linear_and_clips():
    out = scale_fixed(np.array([-30.0, -25.0, -10.0, 5.0, 9.0]), -25, 5)
    assert out.tolist() == [0, 0, 128, 255, 255]


def test_sar_composite_on_real_opera_pair_uses_fixed_ranges(shared_data):
    vv_path = next((shared_data / "geotiff" / "sar").glob("*_VV.tif"))
    vv = _read(vv_path)[0][0]
    vh = _read(vv_path.with_name(vv_path.name.replace("_VV", "_VH")))[0][0]
    vv_db, vh_db = sar_to_db(vv), sar_to_db(vh)
    assert -35 < np.median(vv_db) < 0 and -45 < np.median(vh_db) < -10  # γ0 of land, sane dB
    assert np.median(vv_db) > np.median(vh_db)  # co-pol above cross-pol
    rgb = sar_composite(vv, vh)
    assert rgb.shape == (100, 100, 3) and rgb.dtype == np.uint8
    for channel, key, db in ((0, "vv", vv_db), (1, "vh", vh_db), (2, "ratio", vv_db - vh_db)):
        lo, hi = SAR_DB_RANGES[key]
        expected = np.clip((db - lo) * 255 / (hi - lo), 0, 255)
        assert np.abs(rgb[..., channel].astype(float) - expected).max() <= 1.0
    # already-dB input gives the same picture
    assert np.array_equal(sar_composite(vv_db, vh_db), rgb)
    assert np.array_equal(to_model_rgb(vv[np.newaxis], Sensor.sar, vh=vh), rgb)
    assert np.array_equal(to_model_rgb(np.stack([vv, vh]), Sensor.sar), rgb)


def test_sar_nan_pixels_are_black_in_every_channel():
    vv = np.full((4, 4), 0.05, dtype=np.float32)
    vh = np.full((4, 4), 0.005, dtype=np.float32)
    vv[0, 0] = np.nan
    rgb = sar_composite(vv, vh)
    assert rgb[0, 0].tolist() == [0, 0, 0] and (rgb[1:, 1:] > 0).all()


def test_amplitude_uint8_sar_passes_through_as_grey():
    gray = np.arange(16, dtype=np.uint8).reshape(1, 4, 4) * 10
    rgb = to_model_rgb(gray, Sensor.sar)
    assert rgb.shape == (4, 4, 3) and (rgb == gray[0][..., None]).all()


def test_infrared_real_hit_uav_jpeg_is_grey_for_model_and_coloured_for_display(shared_data):
    path = sorted((shared_data / "hit_uav" / "JPEGImages").glob("*.jpg"))[0]
    array = _read(path)[0]
    assert array.shape[0] == 1
    rgb = to_model_rgb(array, Sensor.infrared)
    assert rgb.shape == (512, 640, 3)
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    assert rgb.min() == 0 and rgb.max() == 255
    shown = to_display_rgb(array, Sensor.infrared)
    assert shown.shape == (512, 640, 3) and not (shown[..., 0] == shown[..., 2]).all()


def test_colormap_runs_dark_to_bright():
    lut = colormap_display(np.arange(256, dtype=np.uint8).reshape(16, 16)).reshape(256, 3)
    brightness = lut.astype(int).sum(axis=1)
    assert lut[0].tolist() == [0, 0, 4] and lut[255].tolist() == [252, 255, 164]
    assert brightness[255] > brightness[128] > brightness[0]


def test_infrared_16bit_stretch():
    thermal = (np.arange(64 * 64, dtype=np.uint16).reshape(1, 64, 64) + 29000)
    rgb = to_model_rgb(thermal, Sensor.infrared)
    assert rgb.min() == 0 and rgb.max() == 255 and rgb.dtype == np.uint8


def test_select_rgb_bands_from_metadata():
    assert select_rgb_bands(None, ["blue", "green", "red", "alpha"], 4) == (3, 2, 1)
    assert select_rgb_bands(["Red", "Green", "Blue", "NIR"], None, 4) == (1, 2, 3)
    s2 = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12"]
    assert select_rgb_bands(s2, None, 13) == (4, 3, 2)
    assert select_rgb_bands([None] * 13, ["undefined"] * 13, 13) == (4, 3, 2)
    assert select_rgb_bands(["B02", "B03", "B04", "B08"], None, 4) == (3, 2, 1)
    assert select_rgb_bands(None, None, 1) == (1, 1, 1)
    assert select_rgb_bands(None, None, 13, override=(8, 4, 3)) == (8, 4, 3)
    with pytest.raises(ValueError, match="got 2"):
        select_rgb_bands(None, None, 2)
    with pytest.raises(ValueError, match="between 1 and 3"):
        select_rgb_bands(None, None, 3, override=(1, 2, 4))


def test_thirteen_band_synthetic_uses_b4_b3_b2():
    stack = np.zeros((13, 8, 8), dtype=np.uint16)
    for band in range(13):
        stack[band] = np.arange(64).reshape(8, 8) * (band + 1)
    stack[3, 0, 0] = 60000  # B4 outlier lands at 255 in the red channel only
    rgb = to_model_rgb(stack, Sensor.optical)
    assert rgb[0, 0].tolist() == [255, 0, 0]
    assert np.array_equal(rgb[..., 1], percentile_stretch(stack[2:3])[0])


def test_one_band_optical_is_grey():
    rgb = to_model_rgb(np.arange(16, dtype=np.uint8).reshape(4, 4), Sensor.optical)
    assert (rgb[..., 0] == rgb[..., 2]).all()


def test_rgba_uint16_drops_alpha_and_masks_alpha_zero(shared_data):
    array, nodata, colorinterp, descriptions = _read(shared_data / "geotiff" / "optical" / "RGBA.uint16.tif")
    rgb = to_model_rgb(
        array, Sensor.optical, nodata=nodata, colorinterp=colorinterp, descriptions=descriptions
    )
    transparent = array[3] == 0
    assert transparent.any() and (~transparent).any()
    assert (rgb[transparent] == 0).all()
    assert (rgb[~transparent] == 128).all()  # the RGB bands are constant 10000 in this file


def test_rgb_byte_nodata_border_is_excluded(shared_data):
    array, nodata, colorinterp, _ = _read(shared_data / "geotiff" / "optical" / "RGB.byte.tif")
    rgb = to_model_rgb(array, Sensor.optical, nodata=nodata, colorinterp=colorinterp)
    border = (array == 0).all(axis=0)
    assert border.any() and (rgb[border] == 0).all()
    inside = rgb[~border]
    assert inside.max() == 255 and np.percentile(inside, 50) > 20


def test_rsvqa_geotiff_optical(shared_data):
    array, nodata, colorinterp, _ = _read(shared_data / "geotiff" / "rsvqa_lr" / "0.tif")
    rgb = to_model_rgb(array, Sensor.optical, nodata=nodata, colorinterp=colorinterp)
    assert rgb.shape == (256, 256, 3) and rgb.min() == 0 and rgb.max() == 255


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((1, "float32", [None], {}, "x_VV.tif", np.array([0.01, 0.2])), Sensor.sar),
        ((1, "float32", ["gamma0"], {}, "scene.tif", None), Sensor.sar),
        ((1, "float32", [None], {}, "scene.tif", np.array([0.01, 0.2, 0.05])), Sensor.sar),
        ((1, "uint16", [None], {"SENSOR": "LWIR camera"}, "f.tif", None), Sensor.infrared),
        ((1, "uint8", [None], {}, "thermal_0001.jpg", None), Sensor.infrared),
        ((3, "uint8", [None] * 3, {}, "RGB.byte.tif", None), Sensor.optical),
        ((13, "uint16", [None] * 13, {}, "S2A_MSIL1C.tif", None), Sensor.optical),
        ((1, "float32", [None], {}, "temperature.tif", np.array([280.0, 300.0])), Sensor.optical),
    ],
)
def test_detect_sensor(args, expected):
    sensor, reason = detect_sensor(*args)
    assert sensor is expected and reason


def test_sar_nodata_value_does_not_make_linear_power_look_like_db():
    """Linear σ0 with a -9999 nodata border over most of the tile must still be read as linear."""
    rng = np.random.default_rng(0)
    linear = rng.uniform(0.01, 0.3, (1, 40, 40)).astype(np.float32)
    bordered = linear.copy()
    bordered[:, :, :24] = -9999.0  # 60% nodata
    with_nodata = to_model_rgb(bordered, "sar", nodata=-9999.0)
    as_nan = linear.copy()
    as_nan[:, :, :24] = np.nan
    with_nan = to_model_rgb(as_nan, "sar")
    np.testing.assert_array_equal(with_nodata, with_nan)
    assert len(np.unique(with_nodata[:, 24:, 0])) > 10  # a real stretch, not one flat value
