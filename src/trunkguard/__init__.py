"""trunkguard: a SIP failover router for call centers."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("trunkguard")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
