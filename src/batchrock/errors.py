"""Service errors, one class per AWS error shape of the Bedrock model.

    ServiceError
     +-- ValidationException            400
     +-- ConflictException              400 (not 409: that is what Bedrock sends)
     +-- ServiceQuotaExceededException  400
     +-- TooManyTagsException           400
     +-- AccessDeniedException          403
     +-- ResourceNotFoundException      404
     +-- ThrottlingException            429
     +-- InternalServerException        500

and the authentication layer's errors, which every AWS service shares (not in the Bedrock
model; their ``x-amzn-ErrorType`` names the ``com.amazon.coral.service`` namespace):

     +-- IncompleteSignatureException          400
     +-- MissingAuthenticationTokenException   403
     +-- UnrecognizedClientException           403
     +-- InvalidSignatureException             403

The domain raises these; only ``api/`` turns them into HTTP responses.
"""

from __future__ import annotations

from typing import ClassVar


class ServiceError(Exception):
    """An error the service reports to the caller."""

    code: ClassVar[str] = "ServiceError"
    http_status: ClassVar[int] = 400
    sender_fault: ClassVar[bool] = True
    #: The Coral namespace the error type carries: Bedrock's own, or the shared auth layer's.
    namespace: ClassVar[str] = "com.amazon.bedrock"
    #: The body member holding the message (Bedrock's API-key errors say ``Message``).
    message_member: ClassVar[str] = "message"

    def __init__(self, message: str | None = None) -> None:
        self.message = message or " ".join((self.__doc__ or self.code).split())
        super().__init__(self.message)


class ValidationException(ServiceError):
    """Input validation failed. Check your request parameters and retry the request."""

    code = "ValidationException"


class ConflictException(ServiceError):
    """Error occurred because of a conflict while performing an operation."""

    code = "ConflictException"


class ServiceQuotaExceededException(ServiceError):
    """The number of requests exceeds the service quota. Resubmit your request later."""

    code = "ServiceQuotaExceededException"


class TooManyTagsException(ServiceError):
    """The request contains more tags than can be associated with a resource (50 tags per
    resource). The maximum number of tags includes both existing tags and those included in
    your current request."""

    code = "TooManyTagsException"

    def __init__(self, message: str | None = None, resource_name: str | None = None) -> None:
        super().__init__(message)
        self.resource_name = resource_name


class AccessDeniedException(ServiceError):
    """The request is denied because of missing access permissions."""

    code = "AccessDeniedException"
    http_status = 403


class ResourceNotFoundException(ServiceError):
    """The specified resource Amazon Resource Name (ARN) was not found. Check the Amazon
    Resource Name (ARN) and try your request again."""

    code = "ResourceNotFoundException"
    http_status = 404


class ThrottlingException(ServiceError):
    """The number of requests exceeds the limit. Resubmit your request later."""

    code = "ThrottlingException"
    http_status = 429


class InternalServerException(ServiceError):
    """An internal server error occurred. Retry your request."""

    code = "InternalServerException"
    http_status = 500
    sender_fault = False


class _AuthLayerError(ServiceError):
    namespace = "com.amazon.coral.service"


class IncompleteSignatureException(_AuthLayerError):
    """The request signature does not conform to AWS standards."""

    code = "IncompleteSignatureException"


class MissingAuthenticationTokenException(_AuthLayerError):
    """Missing Authentication Token"""

    code = "MissingAuthenticationTokenException"
    http_status = 403


class UnrecognizedClientException(_AuthLayerError):
    """The security token included in the request is invalid."""

    code = "UnrecognizedClientException"
    http_status = 403


class ApiKeyRejected(UnrecognizedClientException):
    """Authentication failed: Please make sure your API Key is valid."""

    message_member = "Message"


class InvalidSignatureException(_AuthLayerError):
    """The request signature we calculated does not match the signature you provided. Check
    your AWS Secret Access Key and signing method. Consult the service documentation for
    details."""

    code = "InvalidSignatureException"
    http_status = 403
