"""A source to convert (:class:`Source`: kind, path, options) and what the project knows about
the public datasets (:data:`DATASETS`: licence, sensor, classes to leave out).

Options every converter understands (:data:`COMMON_OPTIONS`): ``root`` (the name records use for
the image root, default the folder's name), ``dataset``, ``licence``, ``sensor``, ``split`` (force
one split for everything), ``holdout`` (fraction for the hash split, default 0.2) and
``holdout_name`` (``val`` by default).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from earthgpt.data.records import Sample, SkipLog, hash_split, image_size, relative_posix
from earthgpt.sensors import Sensor


@dataclass(frozen=True)
class DatasetInfo:
    """What a record of this dataset says about it unless options override."""

    title: str
    licence: str
    sensor: Sensor = Sensor.optical
    exclude: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()


_RESEARCH = "research use only (see the dataset's terms)"

DATASETS: dict[str, DatasetInfo] = {
    "aid": DatasetInfo("AID (Xia et al. 2017)", f"AID: {_RESEARCH}"),
    "nwpu_resisc45": DatasetInfo(
        "NWPU-RESISC45 (Cheng et al. 2017)", f"NWPU-RESISC45: {_RESEARCH}", aliases=("nwpu", "resisc45")
    ),
    "ucmerced": DatasetInfo(
        "UC Merced Land Use (Yang and Newsam 2010)",
        f"UC Merced: {_RESEARCH}",
        aliases=("ucmerced_landuse", "ucm", "uc_merced"),
    ),
    "eurosat": DatasetInfo("EuroSAT (Helber et al. 2019)", "MIT (EuroSAT)"),
    "rsicd": DatasetInfo("RSICD (Lu et al. 2017)", f"RSICD: {_RESEARCH}"),
    "ucm_captions": DatasetInfo("UCM-Captions (Qu et al. 2016)", f"UCM-Captions: {_RESEARCH}"),
    "sydney_captions": DatasetInfo("Sydney-Captions (Qu et al. 2016)", f"Sydney-Captions: {_RESEARCH}"),
    "rsvqa_lr": DatasetInfo("RSVQA-LR (Lobry et al. 2020)", f"RSVQA: {_RESEARCH}"),
    "rsvqa_hr": DatasetInfo("RSVQA-HR (Lobry et al. 2020)", f"RSVQA: {_RESEARCH}"),
    "dota": DatasetInfo("DOTA v1", "DOTA: academic use only"),
    "dior": DatasetInfo("DIOR (Li et al. 2020)", f"DIOR: {_RESEARCH}"),
    "dior_rsvg": DatasetInfo("DIOR-RSVG (Zhan et al. 2023)", f"DIOR-RSVG: {_RESEARCH}"),
    "hit_uav": DatasetInfo(
        "HIT-UAV (Suo et al. 2023)",
        "CC BY 4.0 (HIT-UAV, Suo et al., Sci. Data 10:227, 2023)",
        Sensor.infrared,
        exclude=("DontCare",),
    ),
    "ssdd": DatasetInfo("SSDD (Zhang et al. 2021)", f"SSDD: {_RESEARCH}", Sensor.sar),
}


def dataset_key(name: str) -> str:
    """A dataset name as a key: lower case, ``-`` and spaces as ``_``, aliases resolved."""
    key = re.sub(r"[\s\-]+", "_", name.strip().lower())
    for canonical, info in DATASETS.items():
        if key == canonical or key in info.aliases:
            return canonical
    return key


COMMON_OPTIONS: dict[str, str] = {
    "root": "name of the image root in the records (default: the source folder's name)",
    "dataset": "dataset name in the records (default: from the root name)",
    "licence": "licence text in the records (default: the known dataset's licence)",
    "sensor": "optical | sar | infrared (default: the known dataset's sensor, else optical)",
    "split": "put every record in this split instead of the official or hash split",
    "holdout": "fraction of images the hash split holds out (default 0.2)",
    "holdout_name": "name of the held-out hash split (default val)",
}


@dataclass
class Source:
    """One ``--source KIND=PATH`` with its options.

    Images are stored relative to :attr:`root_dir` (``PATH`` itself, or its folder when ``PATH`` is
    a file) under the name :attr:`root_name`. Derived values are computed once (options are not
    changed after construction).
    """

    kind: str
    path: Path
    options: dict[str, str] = field(default_factory=dict)

    @cached_property
    def root_dir(self) -> Path:
        return self.path if self.path.is_dir() else self.path.parent

    @cached_property
    def root_name(self) -> str:
        return self.options.get("root") or self.root_dir.resolve().name

    @cached_property
    def label(self) -> str:
        """How logs and the card name this source: ``kind:root``."""
        return f"{self.kind}:{self.root_name}"

    @cached_property
    def dataset(self) -> str:
        return dataset_key(self.options.get("dataset") or self.root_name)

    @cached_property
    def info(self) -> DatasetInfo | None:
        return DATASETS.get(self.dataset)

    @cached_property
    def licence(self) -> str:
        if "licence" in self.options:
            return self.options["licence"]
        return self.info.licence if self.info else "unknown"

    @cached_property
    def sensor(self) -> Sensor:
        name = self.options.get("sensor")
        if name is None:
            return self.info.sensor if self.info else Sensor.optical
        try:
            return Sensor(name.lower())
        except ValueError:
            raise ValueError(
                f"{self.label}: sensor must be one of {[s.value for s in Sensor]}, got {name!r}"
            ) from None

    @cached_property
    def excluded_classes(self) -> set[str]:
        """Source class names to leave out (option ``exclude=a,b``; default from the dataset table)."""
        if "exclude" in self.options:
            return {c.strip() for c in self.options["exclude"].split(",") if c.strip()}
        return set(self.info.exclude) if self.info else set()

    def opt(self, key: str, default: str | None = None) -> str | None:
        return self.options.get(key, default)

    def split_for(self, key: str, official: str | None) -> str:
        """The split of one image: the ``split`` option, else the official split, else the hash split
        of ``key`` (its relative path)."""
        if "split" in self.options:
            return self.options["split"]
        if official:
            return official
        try:
            holdout = float(self.options.get("holdout", "0.2"))
        except ValueError:
            raise ValueError(
                f"{self.label}: holdout must be a number, got {self.options['holdout']!r}"
            ) from None
        return hash_split(key, holdout, self.options.get("holdout_name", "val"))

    def record_id(self, key: str) -> str:
        """``dataset/key``: the id that records of the same image share across sources."""
        return f"{self.dataset}/{key}"

    def make_sample(
        self, log: SkipLog, image: Path, key: str, official_split: str | None, annotations: dict[str, Any]
    ) -> Sample | None:
        """A :class:`Sample` for one image file, or None (a counted skip) when the image is missing,
        unreadable or outside the root. ``key`` names the image inside the dataset (its id)."""
        try:
            rel = relative_posix(image, self.root_dir)
        except ValueError:
            log.skip(self.label, "image outside the source folder", key)
            return None
        if not image.is_file():
            log.skip(self.label, "image file missing", rel)
            return None
        try:
            width, height = image_size(image)
        except OSError:
            log.skip(self.label, "image file unreadable", rel)
            return None
        return Sample(
            id=self.record_id(key),
            image_root=self.root_name,
            image=rel,
            width=width,
            height=height,
            sensor=self.sensor,
            dataset=self.dataset,
            licence=self.licence,
            split=self.split_for(rel, official_split),
            annotations=annotations,
        )
