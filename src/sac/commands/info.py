"""`sac info`: parameter counts of a SAC configuration (paper Table 6). Implemented in issue #2."""

HELP = "Print the trainable/frozen parameter table of a SAC configuration (paper Table 6)."


def add_arguments(parser):
    pass


def run(args) -> int:
    from sac.errors import SACError

    raise SACError("sac info is not implemented yet")
