"""Dataset names, importable without pandas or torch (the launcher validates grids with them)."""

GROUPLENS = ("ml-100k", "ml-1m", "ml-10m", "ml-20m")
SEQUENCE_FILES = {   # the papers' preprocessed `user item` files: name → file in its folder
    "amazon-beauty": "beauty.txt",
    "steam": "steam.txt",
    "ml-1m-bert4rec": "ml-1m.txt",
    "ml-20m-bert4rec": "ml-20m.txt",
    "video-sasrec": "Video.txt",
}
USER_LINE_FILES = {  # the S3Rec benchmark files, one user per line: `user item item ...`
    "beauty-s3rec": "Beauty.txt",
    "sports-s3rec": "Sports_and_Outdoors.txt",
    "toys-s3rec": "Toys_and_Games.txt",
    "yelp-s3rec": "Yelp.txt",
}
SYNTHETIC = ("synthetic", "synthetic-ml-1m", "synthetic-ml-20m")
LISTENING_LOGS = {   # Music4All's tab-separated listening events: name → file in its folder
    "music4all": "listening_history.csv",
    "music4all-onion": "userid_trackid_timestamp.tsv",
}
DATASET_NAMES = sorted([*GROUPLENS, *SEQUENCE_FILES, *USER_LINE_FILES, *LISTENING_LOGS,
                        *SYNTHETIC])
