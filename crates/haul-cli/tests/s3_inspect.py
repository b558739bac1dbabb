#!/usr/bin/env python3
"""Independent client for haul's end-to-end tests: reads a bucket with boto3
(not haul) and prints one JSON line per object: key, size, ETag, MD5 of the
body, content type, storage class, user metadata and tags."""
import hashlib
import json
import sys

import boto3
from botocore.config import Config


def main():
    endpoint, bucket, prefix = sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else ""
    s3 = boto3.client("s3", endpoint_url=endpoint, config=Config(s3={"addressing_style": "path"}))
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
