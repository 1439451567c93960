"""pyulogd: a drop-in ulogd2 netfilter logging daemon in Python."""

__version__ = "0.1.0"
