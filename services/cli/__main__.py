"""``python -m services.cli`` is the ``openchat`` command."""

from services.cli.main import main

main()
