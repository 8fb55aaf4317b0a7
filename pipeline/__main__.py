"""``python -m pipeline`` runs the invsync command line."""

from pipeline.cli import main

main()
