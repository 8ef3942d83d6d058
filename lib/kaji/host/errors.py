"""Exceptions raised by the host layer."""

from __future__ import annotations


class HostError(Exception):
    """Base class of every error the host layer raises on purpose."""


class PathEscapeError(HostError, ValueError):
    """A machine path is not absolute or would leave the host's root."""


class ServiceError(HostError):
    """A service could not be started, stopped, reloaded or inspected."""


class BinaryInstallError(HostError):
    """A binary archive could not be verified or installed; the previous install is untouched."""
