"""``batchrock``'s AWS-CLI-v2-compatible command line (a thin client of the HTTP API).

The common path (one list call) imports only the standard library, ``jmespath`` when
``--query`` is given, and this package; botocore is imported only for the credential sources
that need it (SSO, assume-role, processes, container and instance metadata).
"""

from __future__ import annotations
