"""Prometheus exporter for Spacelift."""

from importlib.metadata import PackageNotFoundError, version
from importlib.resources import files

try:
    __version__ = version("spacelift-exporter")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"

# The git commit the package was built from: the Dockerfile writes exporter/REVISION (build arg
# REVISION); a source checkout has none.
try:
    __revision__ = files(__name__).joinpath("REVISION").read_text().strip() or "unknown"
except OSError:
    __revision__ = "unknown"
