"""Who may call the API: accounts and their keys, request authentication, permissions.

- :mod:`.directory`: the accounts, their access keys, Bedrock API keys and bucket grants, as
  frozen domain objects (:class:`~.directory.Directory`).
- :mod:`.credfile`: the credentials file (TOML) read into a Directory, and
  :class:`~.credfile.LiveDirectory`, which re-reads the file when it changes.
- :mod:`.sigv4`: SigV4 verification (Authorization header and presigned query strings), on
  botocore's own canonical-request code.
- :mod:`.authenticate`: one request to one principal: SigV4, or a Bedrock API key
  (``Authorization: Bearer ...``, long- or short-term, over TLS only).
- :mod:`.permissions`: per-key ``actions`` (IAM action names, wildcards).
- :mod:`.keyfile`: what ``batchrock keys ...`` writes (atomic, owner-only, comments kept).

Failures are the typed errors of :mod:`.errors`; ``api/`` turns them into Bedrock's answers.
Nothing here knows HTTP status codes or wire error names.
"""
