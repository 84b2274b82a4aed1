"""The package version, in a module of its own so that sac.modelfile (used by training) can record it without
importing the ``sac`` package root (whose ``load_model`` belongs to the inference layer)."""

__version__ = "0.1.0"
