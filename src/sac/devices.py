"""The compute devices every ``--device`` flag accepts (training and inference alike): one list, here, because
training and inference are sibling layers that may not import each other. Stdlib only (imported by the CLI)."""

DEVICE_CHOICES = ("cpu", "cuda", "auto")  # auto = cuda when available, else cpu
