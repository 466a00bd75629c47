import sys

from launcher import signals

signals.hold()  # first of all: see launcher/signals.py

from launcher.cli import main  # noqa: E402

sys.exit(main())
