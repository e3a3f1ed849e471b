"""``python -m experiments.compare``: see `experiments.compare.cli`."""

from experiments.compare.cli import main

main()
