#!/usr/bin/env python3
"""Independent client for haul's end-to-end tests: reads a bucket with boto3
(not haul) and prints one JSON line per object: key, size, ETag, MD5 of the
body, content type, storage class, user metadata and tags. With `--uploads`
first: one JSON line per multipart upload still open (key, upload id)."""
import hashlib
import json
import sys

import boto3
from botocore.config import Config


def main():
    uploads = sys.argv[1] == "--uploads"
    args = sys.argv[2:] if uploads else sys.argv[1:]
    endpoint, bucket, prefix = args[0], args[1], args[2] if len(args) > 2 else ""
    s3 = boto3.client("s3", endpoint_url=endpoint, config=Config(s3={"addressing_style": "path"}))
    if uploads:
        for u in s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", []):
            print(json.dumps({"key": u["Key"], "upload_id": u["UploadId"]}))
        return
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            key = o["Key"]
            head = s3.head_object(Bucket=bucket, Key=key)
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            try:
                tags = {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]}
            except s3.exceptions.ClientError as e:
                # garage has no tagging API (501 NotImplemented).
                if e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") != 501:
                    raise
                tags = None
            print(json.dumps({
                "key": key,
                "size": head["ContentLength"],
                "etag": head["ETag"].strip('"'),
                "md5": hashlib.md5(body).hexdigest(),
                "content_type": head.get("ContentType"),
                "storage_class": head.get("StorageClass", "STANDARD"),
                "metadata": head.get("Metadata", {}),
                "tags": tags,
            }))


if __name__ == "__main__":
    main()
