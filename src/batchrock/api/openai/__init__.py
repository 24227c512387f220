"""The OpenAI-compatible Files and Batch API (``/v1/files``, ``/v1/batches``): docs/openai.md.

The only code that knows OpenAI's wire: ids (``file-...``, ``batch_...``), JSON shapes, the
``{"error": {...}}`` body, the line formats. A batch is a job of the job store, run by the
same engines as every Bedrock job; this package turns one into the other at the edge.
"""
