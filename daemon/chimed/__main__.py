import sys

from chimed.cli import main

sys.exit(main())
