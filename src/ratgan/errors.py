"""The one exception type whose message is shown to users as it is."""


class RatganError(Exception):
    """A problem with the user's input: the message is one sentence naming the file or field."""

    exit_code = 2
    """The command's exit status when this ends it."""
    label = "error: "
    """What the command line prints before the message."""
