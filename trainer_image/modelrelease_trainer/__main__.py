import os
import sys

# Quieten TensorFlow's C++ start-up chatter unless the user asked for it; must precede its import.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from modelrelease_trainer.cli import main

sys.exit(main())
