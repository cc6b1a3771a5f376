"""Exception types whose messages are meant for the person running qdup."""


class QdupError(Exception):
    """A failure with a message that names the problem; the CLI prints it and exits non-zero."""


class FetchError(QdupError):
    """The dataset could not be fetched, or what was fetched is not the dataset."""


class DataContractError(QdupError):
    """A data contract (Great Expectations suite) failed; nothing downstream may run."""


class ConfigError(QdupError):
    """A configuration value or a name supplied by a user is not acceptable."""


class StoreError(QdupError):
    """A store operation was refused: unknown version or alias, or an attempt to overwrite."""


class TamperedVersionError(StoreError):
    """A version's files no longer match the sha256 its manifest recorded at publish."""

    def __init__(self, version: str, problems: list[str]):
        self.version, self.problems = version, list(problems)
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        super().__init__(f"version {version} is damaged and was not used: {shown} (run `qdup verify {version}`)")
