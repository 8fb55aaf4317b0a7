"""``python -m invsync`` runs the invsync command line."""

from invsync.surfaces.cli import main

main()
