"""The error hierarchy shared by every facesmith package (the CLI turns these into one-line messages)."""


class FacesmithError(Exception):
    """Base of every error a user can cause and act on; the CLI prints it and exits 1."""


class ModelPackError(FacesmithError):
    """A model pack is missing, incomplete or does not match its declared contract."""


class ModelContractError(FacesmithError):
    """A model's inputs or outputs do not have the shapes its wrapper declares."""


class StoreError(FacesmithError):
    """The faceset database cannot be opened, migrated or written as asked."""


class ReadOnlyQueryError(FacesmithError):
    """A statement given to the read-only SQL command would change the database."""


class Interrupted(FacesmithError):
    """The user stopped a run (Ctrl-C); the message says what was saved and how to go on.
    The CLI prints it and exits 130, as a shell does for SIGINT."""
