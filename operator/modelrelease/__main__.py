import sys

from modelrelease.cli import main

sys.exit(main())
