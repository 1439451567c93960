"""``python -m pyulogd.daemon.netns_wrapper``: the same as the ``pyulogd-netns-wrapper`` script."""

import sys

from pyulogd.daemon.netns_wrapper.cli import main

sys.exit(main())
