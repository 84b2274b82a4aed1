"""From model probability maps to nuclei: connected components and seeded watershed (single pass or block by
block). Pure numpy/scipy/scikit-image, no model: shared by inference (``sac segment``), training (validation
instances) and the benchmarks. Import :mod:`sac.postprocess.instances`.
"""
