"""Write the raster fuzz corpus: small hostile and unusual image files every reader must survive.

Run from the repository root: ``python tests/fuzz/make_corpus.py [OUT_DIR]`` (default
``tests/fuzz/corpus``). The output is deterministic and committed; ``tests/test_fuzz_rasters.py``
checks that the script still writes it byte for byte. Besides the files it writes ``cases.json``:
for each file, what it is and what the library reader must do with it (``ok``: the model's RGB;
``error``: one clean :class:`earthgpt.raster.RasterError` or ValueError message).
"""

from __future__ import annotations

import io
import json
import struct
import sys
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import MemoryFile
from rasterio.transform import Affine, from_origin

HERE = Path(__file__).resolve().parent
SIDE = 16
"""Side in pixels of most corpus rasters: big enough to stretch, small enough to commit."""
UTM = CRS.from_epsg(32633)
GEOS = CRS.from_proj4("+proj=geos +h=35785831 +lon_0=0 +sweep=y +ellps=WGS84 +units=m +no_defs")

Writer = Callable[[Path], None]
CASES: list[tuple[str, str, str, Writer]] = []
"""(file name, expected outcome ``ok`` | ``error``, what the file is, writer)."""


def case(name: str, expect: str, what: str) -> Callable[[Writer], Writer]:
    """Register a writer of one corpus file."""

    def register(writer: Writer) -> Writer:
        CASES.append((name, expect, what, writer))
        return writer

    return register


def _pattern(bands: int, dtype: str, height: int = SIDE, width: int = SIDE) -> np.ndarray:
    """Deterministic varied pixels of ``dtype`` (bands, height, width), positive and in range."""
    rng = np.random.default_rng(bands * 1000 + height * 7 + width)
    values = rng.uniform(1, 120, (bands, height, width))
    if np.dtype(dtype).kind == "c":
        return (values + 1j * values[::-1]).astype(dtype)
    return values.astype(dtype)


def _write(path: Path, data: np.ndarray, **profile: object) -> None:
    """A GeoTIFF (or ``driver=``) of ``data`` (bands, height, width) with the given profile."""
    bands, height, width = data.shape
    full = {"driver": "GTiff", "width": width, "height": height, "count": bands, "dtype": str(data.dtype),
            **profile}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **full) as dst:
            dst.write(data)


def _copy_to(path: Path, data: np.ndarray, driver: str, **extra: object) -> None:
    """Write a format GDAL only creates by copy (PNG, JPEG) through an in-memory GeoTIFF."""
    with MemoryFile() as memory:
        bands, height, width = data.shape
        with memory.open(driver="GTiff", width=width, height=height, count=bands, dtype=str(data.dtype),
                         **extra) as tmp:
            tmp.write(data)
        with memory.open() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path, "w", driver=driver, width=width, height=height, count=bands,
                               dtype=str(data.dtype)) as dst:
                dst.write(tmp.read())


def _geotiff_bytes() -> bytes:
    """A valid 48×40 3-band uint8 GeoTIFF, the source of the truncated and wrong-magic cases."""
    with MemoryFile() as memory:
        with memory.open(driver="GTiff", width=48, height=40, count=3, dtype="uint8", crs=UTM,
                         transform=from_origin(500_000, 4_650_000, 10, 10)) as dst:
            dst.write(_pattern(3, "uint8", 40, 48))
        return bytes(memory.getbuffer())


def _photo_bytes(fmt: str, **save: object) -> bytes:
    """A 32×24 RGB picture in ``fmt`` (Pillow's writer)."""
    buffer = io.BytesIO()
    rgb = np.moveaxis(_pattern(3, "uint8", 24, 32), 0, -1)
    Image.fromarray(rgb).save(buffer, format=fmt, **save)
    return buffer.getvalue()


def _png_claiming(width: int, height: int) -> bytes:
    """The 32×24 PNG with its IHDR (and CRC) rewritten to claim ``width`` × ``height``, interlaced."""
    data = bytearray(_photo_bytes("PNG"))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 1)
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def _jpeg_claiming(width: int, height: int) -> bytes:
    """The 32×24 JPEG with its frame header (SOF0) rewritten to claim ``width`` × ``height``."""
    data = bytearray(_photo_bytes("JPEG"))
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


# --- broken files ----------------------------------------------------------------------------------


def _register_broken() -> None:
    tiff = _geotiff_bytes()
    cuts = {"0": 0, "4": 4, "8": 8, "64": 64, "300": 300, "half": len(tiff) // 2, "last": len(tiff) - 1}
    for label, cut in cuts.items():
        case(f"truncated_tif_{label}.tif", "error", f"a GeoTIFF cut after {cut} of {len(tiff)} bytes")(
            lambda p, cut=cut: p.write_bytes(tiff[:cut]))
    for fmt, ext in (("PNG", "png"), ("JPEG", "jpg")):
        data = _photo_bytes(fmt)
        case(f"truncated_{ext}_half.{ext}", "error", f"a {fmt} cut in half")(
            lambda p, data=data: p.write_bytes(data[: len(data) // 2]))
    case("wrong_magic.tif", "error", "a GeoTIFF whose first bytes are not II*\\0 or MM\\0*")(
        lambda p: p.write_bytes(b"XX\x00\x2a" + tiff[4:]))
    case("png_magic_tiff_body.tif", "error", "PNG magic bytes followed by a TIFF body")(
        lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + tiff[8:]))
    case("text_named.tif", "error", "a text file named .tif")(
        lambda p: p.write_bytes(b"this is not an image\n" * 4))
    case("random_bytes.tif", "error", "random bytes after a TIFF magic")(
        lambda p: p.write_bytes(b"II*\x00" + np.random.default_rng(5).bytes(600)))


SHORT, LONG = 3, 4
"""TIFF field types."""


def _tiff(width: int, height: int, *, samples: int = 1, tiled: bool = False) -> bytes:
    """A hand-made little-endian classic TIFF header claiming ``width`` × ``height`` uint8 pixels
    whose pixel data is not there (one strip or one tile, pointing at the header itself)."""
    entries = [(256, LONG, width), (257, LONG, height), (258, SHORT, 8), (259, SHORT, 1), (262, SHORT, 1),
               (277, SHORT, samples), (284, SHORT, 1), (339, SHORT, 1)]
    if tiled:  # TileWidth, TileLength, TileOffsets, TileByteCounts
        entries += [(322, SHORT, 256), (323, SHORT, 256), (324, LONG, 8), (325, LONG, 256 * 256 * samples)]
    else:  # StripOffsets, RowsPerStrip, StripByteCounts
        entries += [(273, LONG, 8), (278, LONG, max(height, 1)),
                    (279, LONG, min(width * height * samples, 2**32 - 1))]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, value in sorted(entries):
        inline = struct.pack("<I", value) if kind == LONG else struct.pack("<HH", value, 0)
        ifd += struct.pack("<HHI", tag, kind, 1) + inline
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0)


def _register_crafted() -> None:
    for name, expect, what, data in (
        ("header_1e6x1e6.tif", "error", "a bare TIFF header claiming 10^6 × 10^6 pixels (one strip)",
         _tiff(10**6, 10**6)),
        ("header_1e6x1e6_tiled.tif", "error", "a TIFF header claiming 10^6 × 10^6 pixels in 256² tiles",
         _tiff(10**6, 10**6, tiled=True)),
        ("header_2e5x2e5.tif", "error", "a TIFF header claiming 2·10^5 × 2·10^5 pixels (under the size "
         "limit) with no pixel data", _tiff(200_000, 200_000)),
        ("header_0x0.tif", "error", "a TIFF header claiming 0 × 0 pixels", _tiff(0, 0)),
        ("header_0x16.tif", "error", "a TIFF header claiming 0 × 16 pixels", _tiff(0, 16)),
        ("header_60000_bands.tif", "error", "a TIFF header claiming 60,000 samples per pixel",
         _tiff(16, 16, samples=60_000)),
        ("header_1e5x1e5.png", "error", "a 32 × 24 PNG whose header claims 10^5 × 10^5 pixels, interlaced",
         _png_claiming(100_000, 100_000)),
        ("header_65500x65500.jpg", "error", "a 32 × 24 JPEG whose header claims 65,500 × 65,500 pixels",
         _jpeg_claiming(65_500, 65_500)),
    ):
        case(name, expect, what)(lambda p, data=data: p.write_bytes(data))


# --- shapes, values and types ------------------------------------------------------------------------


def _register_values() -> None:
    for width, height in ((1, 1), (1, 40), (40, 1)):
        case(f"size_{width}x{height}.tif", "ok", f"a {width} × {height} pixel raster")(
            lambda p, w=width, h=height: _write(p, _pattern(3, "uint16", h, w)))
    fills = {"nan": np.nan, "posinf": np.inf, "neginf": -np.inf}
    for label, value in fills.items():
        case(f"all_{label}.tif", "error", f"float32, every pixel {value}")(
            lambda p, v=value: _write(p, np.full((1, SIDE, SIDE), v, np.float32)))

    def part(path: Path) -> None:
        data = _pattern(3, "float32")
        data[0, :4] = np.nan
        data[1, 4:8] = np.inf
        data[2, 8:12] = -np.inf
        _write(path, data)

    case("part_nan_inf.tif", "ok", "float32 RGB with rows of NaN, +inf and -inf")(part)

    def part_sar(path: Path) -> None:
        data = _pattern(1, "float32") / 100
        data[0, ::3] = np.nan
        data[0, 1::5] = np.inf
        _write(path, data)

    case("part_nan_inf_sar.tif", "ok", "float32 linear power with NaN and +inf pixels")(part_sar)
    for dtype in ("uint8", "int8", "uint16", "int16", "uint32", "int32", "int64", "uint64", "float32",
                  "float64"):
        case(f"dtype_{dtype}.tif", "ok", f"one band of {dtype}")(
            lambda p, d=dtype: _write(p, _pattern(1, d)))
        case(f"dtype_{dtype}_rgb.tif", "ok", f"three bands of {dtype}")(
            lambda p, d=dtype: _write(p, _pattern(3, d)))
    for dtype in ("complex64", "complex128", "complex_int16"):
        stored = "complex64" if dtype == "complex_int16" else dtype
        case(f"dtype_{dtype}.tif", "error", f"one band of {dtype} (SAR SLC)")(
            lambda p, d=dtype, s=stored: _write(p, _pattern(1, s), dtype=d))
    for count in range(1, 21):
        expect = "error" if count > 16 else "ok"
        what = " (taken as a VV/VH pair)" if count == 2 else ""
        case(f"bands_{count:02d}.tif", expect, f"{count} bands of uint16{what}")(
            lambda p, c=count: _write(p, _pattern(c, "uint16")))
    case("nodata_everywhere.tif", "error", "uint8, every pixel equal to the nodata value")(
        lambda p: _write(p, np.full((3, SIDE, SIDE), 7, np.uint8), nodata=7))
    case("nodata_nan_everywhere.tif", "error", "float32, every pixel NaN with nodata NaN")(
        lambda p: _write(p, np.full((1, SIDE, SIDE), np.nan, np.float32), nodata=np.nan))

    def nodata_one_band(path: Path) -> None:
        data = _pattern(3, "uint16")
        data[1] = 5
        _write(path, data, nodata=5)

    case("nodata_one_band.tif", "ok", "uint16 RGB whose green band is all nodata")(nodata_one_band)


# --- colour, georeferencing, pairs and formats ---------------------------------------------------------


def _palette(path: Path) -> None:
    _write(path, (_pattern(1, "uint8") % 4).astype(np.uint8), photometric="palette")
    with rasterio.open(path, "r+") as dst:
        dst.write_colormap(1, {0: (0, 0, 0, 255), 1: (255, 0, 0, 255), 2: (0, 255, 0, 255),
                               3: (0, 0, 255, 255)})


def _rgba(opaque_from: int) -> np.ndarray:
    """RGB and an alpha band that is 0 (transparent) left of column ``opaque_from``, else 255."""
    alpha = np.where(np.arange(SIDE) < opaque_from, 0, 255).astype(np.uint8)
    return np.concatenate([_pattern(3, "uint8"), np.broadcast_to(alpha, (1, SIDE, SIDE))])


def _gif(path: Path) -> None:
    indexes = (_pattern(1, "uint8")[0] % 4).astype(np.uint8)
    image = Image.fromarray(indexes, mode="P")
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255])
    image.save(path)


def _register_colour() -> None:
    case("palette.tif", "ok", "uint8 with a 4-colour palette")(_palette)
    case("palette_gif.gif", "ok", "a GIF (a 4-colour palette)")(_gif)
    case("alpha.tif", "ok", "RGBA GeoTIFF, left half transparent")(
        lambda p: _write(p, _rgba(SIDE // 2), photometric="rgb", alpha="yes"))
    case("alpha_all_zero.tif", "error", "RGBA GeoTIFF, fully transparent")(
        lambda p: _write(p, _rgba(SIDE), photometric="rgb", alpha="yes"))
    case("rgba.png", "ok", "RGBA PNG, left half transparent")(
        lambda p: _copy_to(p, _rgba(SIDE // 2), "PNG", photometric="rgb", alpha="yes"))
    case("png16.png", "ok", "a 16-bit RGB PNG")(lambda p: _copy_to(p, _pattern(3, "uint16") * 500, "PNG"))
    case("png16_grey.png", "ok", "a 16-bit grey PNG")(
        lambda p: _copy_to(p, _pattern(1, "uint16") * 500, "PNG"))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    case("exif_rotated_jpeg.jpg", "ok", "a JPEG whose EXIF orientation says rotate 90°")(
        lambda p: p.write_bytes(_photo_bytes("JPEG", exif=exif.tobytes(), quality=90)))
    case("exif_rotated_png.png", "ok", "a PNG with an eXIf chunk saying rotate 90°")(
        lambda p: p.write_bytes(_photo_bytes("PNG", exif=exif.tobytes())))


def _register_geo() -> None:
    case("no_crs.tif", "ok", "no CRS and no transform")(lambda p: _write(p, _pattern(3, "uint8")))
    rotated = Affine.translation(500_000, 4_650_000) @ Affine.rotation(30) @ Affine.scale(10, -10)
    sheared = Affine.translation(500_000, 4_650_000) @ Affine.shear(20, 5) @ Affine.scale(10, -10)
    case("rotated.tif", "ok", "UTM 33N, transform rotated by 30°")(
        lambda p: _write(p, _pattern(3, "uint8"), crs=UTM, transform=rotated))
    case("sheared.tif", "ok", "UTM 33N, transform sheared (20°, 5°)")(
        lambda p: _write(p, _pattern(3, "uint8"), crs=UTM, transform=sheared))

    def gcps(path: Path) -> None:
        _write(path, _pattern(3, "uint8"))
        points = [GroundControlPoint(row=r, col=c, x=12.4 + c / 400, y=41.9 - r / 400)
                  for r, c in ((0, 0), (0, SIDE), (SIDE, SIDE), (SIDE, 0))]
        with rasterio.open(path, "r+") as dst:
            dst.gcps = (points, CRS.from_epsg(4326))

    case("gcps_only.tif", "ok", "no transform, four GCPs in EPSG:4326")(gcps)
    case("geostationary.tif", "ok", "the geostationary (GEOS) CRS, the disc's edge and space inside")(
        lambda p: _write(p, _pattern(3, "uint8"), crs=GEOS,
                         transform=from_origin(5_300_000, 1_000_000, 50_000, 50_000)))
    for name, what, origin, step in (
        ("antimeridian.tif", "EPSG:4326 from 179.5°E across the antimeridian to 180.5°", (179.5, 10.0),
         1 / SIDE),
        ("north_pole.tif", "EPSG:4326 up to latitude 90°", (0.0, 90.0), 0.5),
        ("beyond_pole.tif", "EPSG:4326 from latitude 92° (past the pole)", (0.0, 92.0), 0.5),
        ("south_pole.tif", "EPSG:4326 down to latitude -90°", (-180.0, -90.0 + SIDE * 0.5), 0.5),
    ):
        case(name, "ok", what)(lambda p, o=origin, s=step: _write(
            p, _pattern(3, "uint8"), crs=CRS.from_epsg(4326), transform=from_origin(o[0], o[1], s, s)))
    case("bigtiff.tif", "ok", "a BigTIFF")(lambda p: _write(p, _pattern(3, "uint16"), BIGTIFF="YES"))


def _register_sar() -> None:
    geo = {"crs": UTM, "transform": from_origin(500_000, 4_650_000, 10, 10)}
    for pol, width in (("VV", SIDE), ("VH", SIDE - 2)):
        case(f"s1_mismatch_{pol}.tif", "error" if pol == "VV" else "ok",
             f"Sentinel-1 {pol} power, {width} px wide" + (": its VH sibling differs in size" if pol == "VV"
                                                            else ""))(
            lambda p, w=width: _write(p, _pattern(1, "float32", SIDE, w) / 500, **geo))
    case("s1_badpair_VV.tif", "error", "Sentinel-1 VV power whose VH sibling is not an image")(
        lambda p: _write(p, _pattern(1, "float32") / 500, **geo))
    case("s1_badpair_VH.tif", "error", "a text file named as a VH sibling")(
        lambda p: p.write_bytes(b"not a raster\n"))


_register_broken()
_register_crafted()
_register_values()
_register_colour()
_register_geo()
_register_sar()


def main(out: Path = HERE / "corpus") -> None:
    """Write every case into ``out`` (emptied of old corpus files first) and ``cases.json``."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        old.unlink()
    manifest = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        for name, expect, what, writer in CASES:
            writer(out / name)
            manifest.append({"file": name, "expect": expect, "what": what})
    text = json.dumps(manifest, indent=1, ensure_ascii=False)
    (out / "cases.json").write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "corpus")
