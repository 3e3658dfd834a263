"""A bucket that is not the server's, for what the server writes there: a job's dataset at a destination
of the tenant's own (jobs.views.exports). The three calls a dataset makes (put, get, delete) on the
server's boto3 client (the one set of credentials vlmq has), S3's errors as vlmq's
(jobs.adapters.listing.s3_errors: a missing or denied bucket is InvalidInput, the rest
StorageUnavailable). Whether the tenant may have the server write there is jobs.adapters.uris' rule
(UriPolicy.check_write), checked before this."""

from __future__ import annotations

from jobs.adapters.listing import S3Client, s3_errors


class BucketStore:
    def __init__(self, client: S3Client, bucket: str) -> None:
        self.client, self.bucket = client, bucket

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        with s3_errors(self.bucket, f"writing s3://{self.bucket}/{key}"):
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)
        return key

    def get(self, key: str) -> bytes:
        with s3_errors(self.bucket, f"reading s3://{self.bucket}/{key}"):
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            try:
                return bytes(body.read())
            finally:
                body.close()

    def delete(self, key: str) -> None:
        with s3_errors(self.bucket, f"deleting s3://{self.bucket}/{key}"):
            self.client.delete_object(Bucket=self.bucket, Key=key)
