"""Datasets: the registry of facts, the loaders, the splits, the cache and the read-only mirror."""
