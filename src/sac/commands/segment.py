"""`sac segment`: parameter counts of a SAC configuration (paper Table 6). Implemented in issue #2."""

HELP = "Segment nuclei in images: masks, instances, measurements, QuPath/napari outputs."


def add_arguments(parser):
    pass


def run(args) -> int:
    from sac.errors import SACError

    raise SACError("sac segment is not implemented yet")
