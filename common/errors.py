"""The error family: problems a user can act on. The CLI and the pages print their message, never a traceback."""


class ApprentiError(Exception):
    """A problem the user can act on; the message says what to do next."""


class DuplicateIdError(ApprentiError):
    """A document id that the knowledge base already holds."""


class BusyError(ApprentiError):
    """Another Apprenti process holds the resource this one needs."""
