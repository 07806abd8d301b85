"""One small error hierarchy for the whole product.

A bad *record* is never an exception: it becomes a ``Rejected`` value and goes to the
dead-letter topic. Exceptions are for things an operator must fix or retry: bad config,
a bad artifact, bad training data, an unreachable or failing broker.
"""

from __future__ import annotations


class EcgError(Exception):
    """Base class of every error this product raises on purpose."""

    #: True when retrying the same operation later may succeed.
    retriable: bool = False


class ConfigError(EcgError):
    """A configuration file, flag or environment variable is wrong."""


class ArtifactError(EcgError):
    """A model artifact is missing, incomplete or incompatible."""


class DataError(EcgError):
    """Training or scoring input data is unusable (missing, malformed, wrong shape)."""


class BrokerError(EcgError):
    """Kafka is unreachable, a topic is missing, or a produce/commit failed."""

    retriable = True
