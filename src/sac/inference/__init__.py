"""Whole-image inference: tiling, SAC segmentation, instances, output files, the Python API (issue #5).

Import the submodules directly (``sac.inference.segmenter``, ``.api``, ``.writers``, ...); nothing heavy is
imported here so that ``import sac.inference`` stays cheap.
"""
