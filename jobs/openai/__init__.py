"""The OpenAI-compatible surface: files and batches (service, request/response lines, SQL)."""
