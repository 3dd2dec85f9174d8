"""recsys_core: train and evaluate one sequential recommender on one dataset (one study cell)."""
