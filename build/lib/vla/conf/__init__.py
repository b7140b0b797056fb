"""The Hydra configs, installed as the package `vla.conf` (see setup.cfg): config groups mirror the code."""
