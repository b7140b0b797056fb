"""The error every config value check raises: one line naming the key, the value found and what is expected."""


class ConfigError(ValueError):
    """A setting that cannot work, named with its key, the value found and what is expected."""


def check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)
