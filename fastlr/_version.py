"""The version of fastlr, written once: the package, the CLI and the build metadata read it here."""

__version__ = "0.1.0"
