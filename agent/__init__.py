"""The wiring: configuration loader, daemon, scheduler, CLI and the demo site.

Every other layer is imported from here and none imports this package back.
"""
