"""dutyd's daemon layer: configuration, scheduling, storage, CLI and HTTP."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dutyd")
except PackageNotFoundError:  # run from a source tree without installing
    __version__ = "0.0.0"
