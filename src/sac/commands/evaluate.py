"""`sac evaluate`: parameter counts of a SAC configuration (paper Table 6). Implemented in issue #2."""

HELP = "Score predictions (--pred) or a trained model (--model) against ground truth."


def add_arguments(parser):
    pass


def run(args) -> int:
    from sac.errors import SACError

    raise SACError("sac evaluate is not implemented yet")
