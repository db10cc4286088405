import sys

from xrd_agent.cli import main

sys.exit(main())
