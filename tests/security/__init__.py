"""The security suite: each promise of SECURITY.md attacked as a hostile client would, against the real
API (over HTTP, with real Postgres, Redis and S3), so no later change reopens a hole."""
