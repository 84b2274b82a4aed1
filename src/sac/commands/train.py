"""`sac train`: parameter counts of a SAC configuration (paper Table 6). Implemented in issue #2."""

HELP = "Fine-tune SAC (LoRA + mask decoder + prompt generator) on a dataset."


def add_arguments(parser):
    pass


def run(args) -> int:
    from sac.errors import SACError

    raise SACError("sac train is not implemented yet")
