"""Exception types whose messages are meant for the person running qdup."""


class QdupError(Exception):
    """A failure with a message that names the problem; the CLI prints it and exits non-zero."""


class FetchError(QdupError):
    """The dataset could not be fetched, or what was fetched is not the dataset."""


class DataContractError(QdupError):
    """A data contract (Great Expectations suite) failed; nothing downstream may run."""


class ConfigError(QdupError):
    """A configuration value or a name supplied by a user is not acceptable."""
