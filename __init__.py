"""dutyd: a monitoring and alerting daemon that enforces machine-room duty rules.

The repository root is this package: each top-level folder is one layer, installed as
`dutyd.<folder>` (see CONTRIBUTING.md, "One namespace"). Data flows
collectors -> (agent: scheduler) -> rules -> notify -> channels, and rules/latest -> exporters/web.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dutyd")
except PackageNotFoundError:  # run from a source tree without installing
    __version__ = "0.0.0"
