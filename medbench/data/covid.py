"""The COVID-19 Radiography Database (Kaggle; chest X-rays: COVID, Lung_Opacity, Normal, Viral
Pneumonia), read from its class folders (:mod:`medbench.data.folders`) and registered by name."""

from __future__ import annotations

import os
from pathlib import Path

from medbench.core.errors import DataError
from medbench.data.folders import IMAGE_SUFFIXES, load_class_folders
from medbench.data.registry import LoadRequest, register_dataset
from medbench.data.splits import Splits

COVID_FOLDER = "COVID-19_Radiography_Dataset"
COVID_CLASSES = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")
COVID_URL = "https://www.kaggle.com/datasets/tawsifurrahman/covid19-radiography-database"


def covid_folder(root: Path) -> Path | None:
    """``<root>/COVID-19_Radiography_Dataset``, or ``root`` itself if it holds the class folders."""
    nested = root / COVID_FOLDER
    if nested.is_dir():
        return nested
    if root.is_dir() and any((root / c).is_dir() for c in COVID_CLASSES):
        return root
    return None


def _covid_marker(size: int, root: Path) -> Path:
    """A file that exists when the data is present (the registry checks presence by a file)."""
    folder = covid_folder(root)
    if folder is not None:
        for cls in COVID_CLASSES:
            for sub in (folder / cls / "images", folder / cls):
                if sub.is_dir():
                    for entry in sorted(os.scandir(sub), key=lambda e: e.name):
                        if entry.is_file() and entry.name.lower().endswith(IMAGE_SUFFIXES):
                            return Path(entry.path)
    return root / COVID_FOLDER


@register_dataset("covid19_radiography", num_classes=len(COVID_CLASSES), channels=1,
                  expected_file=_covid_marker)
def load_covid19_radiography(req: LoadRequest) -> Splits:
    """COVID-19 Radiography Database (Kaggle; chest X-rays: COVID, Lung_Opacity, Normal, Viral
    Pneumonia), from its class folders; grayscale, any size (default 112), stratified 70/10/20."""
    folder = covid_folder(req.root)
    if folder is None:
        hint = " (it needs a Kaggle account, so --download cannot fetch it)" if req.download else ""
        raise DataError(
            f"{req.root / COVID_FOLDER}: not found; download the COVID-19 Radiography Database from "
            f"{COVID_URL}{hint} and unzip it into {req.root}"
        )
    return load_class_folders(
        folder,
        name="covid19_radiography",
        size=req.size,
        channels=1,
        classes=COVID_CLASSES,
        cache_root=req.root,
        meta={"citation": "Chowdhury et al., IEEE Access 2020; Rahman et al., Comput. Biol. Med. 2021"},
    )
