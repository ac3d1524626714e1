"""The exceptions fastlr raises for problems a user can fix; the CLI prints them as one line."""


class FastlrError(Exception):
    """Base class: an error whose message is meant for the user, without a traceback."""


class DataError(FastlrError, ValueError):
    """A data file or array is missing, malformed or unusable."""


class BackendError(FastlrError, ImportError):
    """A requested backend is unknown or not available on this machine."""


class ModelFileError(FastlrError, ValueError):
    """A model file is missing, truncated, foreign or unsafe."""


class DivergenceError(FastlrError, FloatingPointError):
    """The training loss became NaN or infinite; the last finite weights were kept."""
