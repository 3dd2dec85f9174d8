"""Dataset names, importable without pandas or torch (the launcher validates grids with them)."""

GROUPLENS = ("ml-100k", "ml-1m", "ml-10m", "ml-20m")
SEQUENCE_FILES = {   # the papers' preprocessed `user item` files: name → file in its folder
    "amazon-beauty": "beauty.txt",
    "steam": "steam.txt",
    "ml-1m-bert4rec": "ml-1m.txt",
    "ml-20m-bert4rec": "ml-20m.txt",
}
SYNTHETIC = ("synthetic", "synthetic-ml-1m", "synthetic-ml-20m")
DATASET_NAMES = sorted([*GROUPLENS, *SEQUENCE_FILES, *SYNTHETIC])
LISTENING_LOGS = {   # Music4All's tab-separated listening events: name → file in its folder
    "music4all": "listening_history.csv",
    "music4all-onion": "userid_trackid_timestamp.tsv",
}
DATASET_NAMES = sorted([*DATASET_NAMES, *LISTENING_LOGS])
