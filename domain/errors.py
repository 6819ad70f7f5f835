"""Domain errors. Each maps to one stable problem type at the edge (gateways/http/problems.py)."""


class DomainError(Exception):
    """A rule of the domain refused the command."""


class ValidationFailedError(DomainError):
    """The command's input breaks a domain rule (a name too long, an empty field)."""


class IdempotencyKeyReusedError(DomainError):
    """The same idempotency key came back with a different request."""


class NotFoundError(DomainError):
    """No such aggregate (or not visible to the caller)."""
