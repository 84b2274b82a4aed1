"""From model probability maps to nuclei: connected components and seeded watershed (single pass or block by
block). Pure numpy/scipy/scikit-image, no model: shared by inference (``sac segment``), training (validation
instances) and the benchmarks. Import :mod:`sac.postprocess.instances`. This package module itself holds only the
defaults (stdlib, so the CLI can print them in ``--help`` without importing numpy).
"""

# Markers on a distance head's map (units: fraction of a nucleus's own peak distance); see sac.postprocess.watershed.
# Chosen on the default model's validation maps (benchmarks/instances_from_maps.py) among h in {0.05, 0.1, 0.15,
# 0.2, 0.3} by the mean AJI of the MoNuSeg hold-out and DSB val: lower h splits more (best for dense H&E, 0.1),
# higher h less (best for DSB's larger nuclei, 0.2).
DISTANCE_H = 0.15
DISTANCE_SIGMA = 1.0
