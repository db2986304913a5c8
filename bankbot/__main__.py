"""`python -m bankbot` is the bankbot command."""

import sys

from bankbot.cli import main

sys.exit(main())
