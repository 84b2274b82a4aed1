"""`sac data`: parameter counts of a SAC configuration (paper Table 6). Implemented in issue #2."""

HELP = "Convert original dataset downloads and make reproducible splits."


def add_arguments(parser):
    pass


def run(args) -> int:
    from sac.errors import SACError

    raise SACError("sac data is not implemented yet")
