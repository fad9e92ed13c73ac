"""ToolError: what a tool raises to hand the model an error text verbatim (counted as a tool error).

Kept in its own import-light module: tool worker processes and user tool files import it without pulling in the
rest of the package.
"""


class ToolError(Exception):
    """A tool's own failure report: its message goes to the model as is, and the call counts as an error.

    Any other exception a tool raises reaches the model as "Error: <tool> raised <Type>: <message>".
    """

    def __init__(self, message: str, is_timeout: bool = False) -> None:
        """
        Args:
            message: the text the model sees.
            is_timeout: the tool gave up on a time limit of its own (counted as a timeout, not only an error).
        """
        super().__init__(message)
        self.message = message
        self.is_timeout = is_timeout
