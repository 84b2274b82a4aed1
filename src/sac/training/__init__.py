"""Training: the Lightning module, data module, callbacks and the run folder of `sac train`."""
