"""A local S3 endpoint for benches: moto's server on a free loopback port, in its own process, with objects."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true"}


def serve(env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """moto's server on a free loopback port, started with `env` (e.g. INITIAL_NO_AUTH_ACTION_COUNT); returns
    (process, endpoint URL) once it accepts connections."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-c", "from moto.server import main; main()", "-H", "127.0.0.1",
                               "-p", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(150):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    return server, f"http://127.0.0.1:{port}"


def start(objects: dict[str, bytes], buckets: tuple[str, ...] = ()) -> tuple[subprocess.Popen, str]:
    """Start the server, create `buckets` and every `bucket/key` of `objects`; returns (process, endpoint URL)."""
    import boto3

    server, endpoint = serve()
    client = boto3.client("s3", endpoint_url=endpoint, region_name=KEYS["AWS_DEFAULT_REGION"],
                          aws_access_key_id=KEYS["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=KEYS["AWS_SECRET_ACCESS_KEY"])
    for bucket in {*buckets, *(k.split("/", 1)[0] for k in objects)}:
        client.create_bucket(Bucket=bucket)
    for key, body in objects.items():
        bucket, name = key.split("/", 1)
        client.put_object(Bucket=bucket, Key=name, Body=body)
    return server, endpoint
