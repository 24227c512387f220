"""The CLI's error classes: each knows its exit code and how AWS CLI v2 prints it.

v2 (2.34+) writes ``"\\n<prog>: [ERROR]: " + text + "\\n"`` to stderr. Errors that carry a
``code`` read ``An error occurred (<code>): <message>``; argument-syntax errors also append the
usage block. Exit codes: 252 parameters/syntax, 253 configuration/region/credentials,
254 service errors, 255 everything else, 130 Ctrl-C.
"""

from __future__ import annotations

from typing import Any

PROG = "batchrock"

USAGE = (
    f"usage: {PROG} [options] <command> <subcommand> [<subcommand> ...] [parameters]\n"
    "To see help text, you can run:\n"
    "\n"
    f"  {PROG} help\n"
    f"  {PROG} <command> help\n"
    f"  {PROG} <command> <subcommand> help\n"
)


class CliError(Exception):
    """Any failure the CLI reports on stderr (rc 255 unless a subclass says otherwise)."""

    rc = 255
    code: str | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def render(self) -> str:
        text = self.message
        if self.code:
            text = f"An error occurred ({self.code}): {text}"
        # AWS CLI strips the message (a service message may end in spaces or newlines).
        return f"\n{PROG}: [ERROR]: {text.strip()}\n"


class ParamValidationError(CliError):
    """Bad parameters found before any request is sent."""

    rc = 252
    code = "ParamValidation"


class ArgumentSyntaxError(ParamValidationError):
    """An argparse-level error: the usage block follows the message."""

    def render(self) -> str:
        return f"\n{PROG}: [ERROR]: An error occurred ({self.code}): {self.message}\n\n{USAGE}"


class UnknownArgumentError(CliError):
    rc = 252

    def render(self) -> str:
        return f"\n{USAGE}\n" + super().render()


class ConfigurationError(CliError):
    rc = 253
    code = "Configuration"


class NoRegionError(CliError):
    rc = 253
    code = "NoRegion"

    def __init__(self) -> None:
        super().__init__(
            "You must specify a region. You can also configure your region by running "
            '"aws configure".'
        )


class NoCredentialsError(CliError):
    rc = 253
    code = "NoCredentials"

    def __init__(self) -> None:
        super().__init__(
            'Unable to locate credentials. You can configure credentials by running "aws login".'
        )


class ProfileNotFound(CliError):
    def __init__(self, profile: str) -> None:
        super().__init__(f"The config profile ({profile}) could not be found")


class ServiceError(CliError):
    """The service answered with an error (botocore's ClientError)."""

    rc = 254

    def __init__(
        self,
        code: str,
        message: str,
        operation: str,
        *,
        retries: int | None = None,
        status: int = 400,
        fields: dict[str, Any] | None = None,
    ) -> None:
        retry = f" (reached max retries: {retries})" if retries is not None else ""
        super().__init__(
            f"An error occurred ({code}) when calling the {operation} operation{retry}: {message}"
        )
        self.error_code = code
        self.error_message = message
        self.status = status
        self.fields = fields or {}


class EndpointError(CliError):
    """Connection refused, DNS failure, TLS failure or timeout (rc 255)."""
