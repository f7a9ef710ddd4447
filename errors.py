"""rillet's exception types: raised at the boundary where bad input enters, with a message
that says what was wrong and what to do about it."""


class RilletError(Exception):
    """Base class of every error rillet raises on purpose."""


class ConfigError(RilletError, ValueError):
    """A configuration value is out of range or inconsistent with another."""


class EnvironmentIdError(RilletError, ValueError):
    """An environment id that EnvPool does not know."""


class SpecMismatchError(RilletError, ValueError):
    """Data (replay items, dataset features, batches) does not match the spec a consumer expects."""


class CheckpointError(RilletError, ValueError):
    """A checkpoint is missing, incomplete, or was written with a different configuration."""


class SignatureError(ConfigError, TypeError):
    """An object passed to a stage does not have the call signature the stage documents."""


class DivergenceError(RilletError, FloatingPointError):
    """The learner's parameters became non-finite (NaN or inf); the run stops before checkpointing them."""


class ReplayUnreachableError(RilletError, ConnectionError):
    """The Reverb server at an address did not answer within the wait allowed."""
