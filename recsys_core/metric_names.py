"""The names of the full-ranking metrics and their default cut-offs, apart from metrics.py so
that what only validates configurations (the launcher planning a grid, `status`) does not
import torch: that import is most of the launcher's start-up."""
DEFAULT_KS = (5, 10, 20)
METRICS = ("recall", "ndcg", "mrr", "precision")
