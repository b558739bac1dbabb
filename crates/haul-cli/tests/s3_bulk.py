#!/usr/bin/env python3
"""Bulk client for haul's large end-to-end tests, with boto3 (not haul) and a
thread pool, so tens of thousands of objects take seconds, not minutes.

  s3_bulk.py put ENDPOINT BUCKET SPEC BODIES
      SPEC: JSON lines {key, offset, size, content_type?, metadata?, tags?};
      the object's bytes are BODIES[offset:offset+size]. Prints nothing.
  s3_bulk.py dump ENDPOINT BUCKET PREFIX [--head KEYS]
      One JSON line per object: key, size, ETag, LastModified (ns since the
      epoch), and the MD5 of the body (read when the ETag is not one: a
      multipart upload's); for the keys listed in the file KEYS (one JSON
      string a line) also content type, user metadata and tags (a HEAD and
      a GetObjectTagging each).
"""
import calendar
import hashlib
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import boto3
from botocore.config import Config

THREADS = 16


def client(endpoint):
    cfg = Config(s3={"addressing_style": "path"}, max_pool_connections=THREADS * 2,
                 retries={"max_attempts": 10, "mode": "standard"})
    return boto3.client("s3", endpoint_url=endpoint, config=cfg)


def put(endpoint, bucket, spec, bodies):
    s3 = client(endpoint)
    with open(bodies, "rb") as f:
        blob = f.read()
    with open(spec, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]

    def one(r):
        args = {"Bucket": bucket, "Key": r["key"], "Body": blob[r["offset"]:r["offset"] + r["size"]]}
        if r.get("content_type"):
            args["ContentType"] = r["content_type"]
        if r.get("metadata"):
            args["Metadata"] = r["metadata"]
        if r.get("tags"):
            args["Tagging"] = "&".join(
                f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in r["tags"].items())
        s3.put_object(**args)

    with ThreadPoolExecutor(THREADS) as pool:
        for _ in pool.map(one, rows):
            pass


def dump(endpoint, bucket, prefix, head_keys):
    s3 = client(endpoint)
    listed = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        listed.extend(page.get("Contents", []))
    heads = set()
    if head_keys:
        with open(head_keys, encoding="utf-8") as f:
            heads = {json.loads(line) for line in f if line.strip()}

    def one(o):
        key = o["Key"]
        lm = o["LastModified"]
        row = {
            "key": key,
            "size": o["Size"],
            "etag": o["ETag"].strip('"'),
            "mtime_ns": calendar.timegm(lm.utctimetuple()) * 10**9 + lm.microsecond * 1000,
        }
        if "-" in row["etag"]:
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            row["md5"] = hashlib.md5(body).hexdigest()
        else:
            row["md5"] = row["etag"]
        if key in heads:
            h = s3.head_object(Bucket=bucket, Key=key)
            row["content_type"] = h.get("ContentType")
            row["metadata"] = h.get("Metadata", {})
            tags = s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
            row["tags"] = {t["Key"]: t["Value"] for t in tags}
        return json.dumps(row)

    with ThreadPoolExecutor(THREADS) as pool:
        for line in pool.map(one, listed):
            print(line)


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "put":
        put(*args)
    elif mode == "dump":
        dump(args[0], args[1], args[2], args[4] if args[3:4] == ["--head"] else None)
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
