"""`python -m hwopt ...` runs the same CLI as the `hwopt` console script."""

from hwopt.cli import main

main()
