"""``python -m shipit`` runs the same CLI as the ``shipit`` command."""

from shipit.cli.main import main

main()
