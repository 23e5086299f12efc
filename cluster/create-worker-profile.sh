#!/usr/bin/env bash
# Create, once per AWS account, the instance profile cluster.yaml's GPU workers use: read/write of the results
# bucket and read of one data prefix, nothing else (not the EC2 + S3 rights of Ray's default head profile).
# Needs the AWS CLI and IAM rights.
#   LORA_SWEEP_BUCKET=my-bucket LORA_SWEEP_DATA=s3://my-data/glue bash cluster/create-worker-profile.sh
# LORA_SWEEP_DATA (default s3://$LORA_SWEEP_BUCKET/data) is the prefix studies read with data.dataset: s3://...
# or GLUE_DIR=s3://...
set -euo pipefail
: "${LORA_SWEEP_BUCKET:?set LORA_SWEEP_BUCKET to the results bucket}"
data="${LORA_SWEEP_DATA:-s3://$LORA_SWEEP_BUCKET/data}"
data="${data#s3://}"
data="${data%/}"
data_bucket="${data%%/*}"
data_prefix="${data#"$data_bucket"}"
data_prefix="${data_prefix#/}"
[ -n "$data_prefix" ] || { echo "LORA_SWEEP_DATA must name a prefix inside a bucket, e.g. s3://my-data/glue" >&2; exit 2; }
here="$(cd "$(dirname "$0")" && pwd)"
name=lora-sweep-worker
trust='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}'
aws iam create-role --role-name "$name" --assume-role-policy-document "$trust" >/dev/null
aws iam put-role-policy --role-name "$name" --policy-name lora-sweep-results \
    --policy-document "$(sed -e "s|LORA_SWEEP_DATA_BUCKET|$data_bucket|g" -e "s|LORA_SWEEP_DATA_PREFIX|$data_prefix|g" \
        -e "s|LORA_SWEEP_BUCKET|$LORA_SWEEP_BUCKET|g" "$here/worker-s3-policy.json")"
aws iam create-instance-profile --instance-profile-name "$name" >/dev/null
aws iam add-role-to-instance-profile --instance-profile-name "$name" --role-name "$name"
# The head (Ray's ray-autoscaler-v1 role, created by the first `ray up`) must be allowed to hand this role to workers.
aws iam put-role-policy --role-name ray-autoscaler-v1 --policy-name pass-lora-sweep-worker --policy-document \
    '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iam:PassRole","Resource":"arn:aws:iam::*:role/lora-sweep-worker"}]}'
echo "instance profile $name: read/write s3://$LORA_SWEEP_BUCKET, read s3://$data_bucket/$data_prefix, nothing else"
