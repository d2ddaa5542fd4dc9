"""uebench harness: registries, core types, data sets, PGD, the training loop, results and noise cache."""

__version__ = "0.1.0"
