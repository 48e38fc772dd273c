"""The one exception type whose message is shown to users as it is."""


class RatganError(Exception):
    """A problem with the user's input: the message is one sentence naming the file or field."""
