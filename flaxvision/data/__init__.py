"""Datasets: download to data/raw, preprocess to data/prepared, and the reader training uses.

Modules: ``download`` (mirror, cache, verified downloads, safe extraction, atomic folders),
``datasets`` (the datasets params ``data`` can name and their layouts), ``images`` (decoding),
``splits`` (how train/validation/test are formed) and ``prepared`` (the arrays on disk).
"""

from flaxvision.data.datasets import RAW_DIR, SOURCE_IDENTITY, download_dataset, identify_dataset, read_dataset
from flaxvision.data.prepared import PREPARED_DIR, Images, Prepared, load_prepared, prepare

__all__ = [
    "PREPARED_DIR",
    "RAW_DIR",
    "SOURCE_IDENTITY",
    "Prepared",
    "Images",
    "download_dataset",
    "identify_dataset",
    "load_prepared",
    "prepare",
    "read_dataset",
]
