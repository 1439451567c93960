import sys

from pyulogd.daemon.cli import main

sys.exit(main())
