"""``python -m dnprof`` runs the command line."""

from dnprof.cli import main

main()
