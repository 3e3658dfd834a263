"""The adapters at the edges of the domain: Postgres sessions, S3 storage, Celery dispatch, input URIs,
metrics, log redaction."""
