"""The protocol's error hierarchy. Every error names the problem and, where one exists, the fix."""


class ProtocolError(ValueError):
    """Base class: bad bytes or bad parameters reached protocol code."""


class CodecError(ProtocolError):
    """A model blob could not be decoded against the expected architecture."""


class ModelValidationError(ProtocolError):
    """A model decoded but is unusable (for example NaN or infinite weights)."""


class CIDError(ProtocolError):
    """A CID is malformed, unsupported, or does not match its bytes."""


class EnvelopeError(ProtocolError):
    """An encrypted envelope is malformed, tampered with, or not addressed to us."""


class MessageError(ProtocolError):
    """A gossip message does not match its schema."""


class DatasetError(ProtocolError):
    """A dataset file is missing or corrupt."""


class VRFError(ProtocolError):
    """A VRF key, proof or certification is invalid."""
