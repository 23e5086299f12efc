#!/usr/bin/env bash
# Create, once per AWS account, the instance profile cluster.yaml's GPU workers use: read/write of the results
# bucket, nothing else (not the EC2 + S3 rights of Ray's default head profile). Needs the AWS CLI and IAM rights.
#   LORA_SWEEP_BUCKET=my-bucket bash cluster/create-worker-profile.sh
set -euo pipefail
: "${LORA_SWEEP_BUCKET:?set LORA_SWEEP_BUCKET to the results bucket}"
here="$(cd "$(dirname "$0")" && pwd)"
name=lora-sweep-worker
trust='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}'
aws iam create-role --role-name "$name" --assume-role-policy-document "$trust" >/dev/null
aws iam put-role-policy --role-name "$name" --policy-name lora-sweep-results \
    --policy-document "$(sed "s/LORA_SWEEP_BUCKET/$LORA_SWEEP_BUCKET/g" "$here/worker-s3-policy.json")"
aws iam create-instance-profile --instance-profile-name "$name" >/dev/null
aws iam add-role-to-instance-profile --instance-profile-name "$name" --role-name "$name"
# The head (Ray's ray-autoscaler-v1 role, created by the first `ray up`) must be allowed to hand this role to workers.
aws iam put-role-policy --role-name ray-autoscaler-v1 --policy-name pass-lora-sweep-worker --policy-document \
    '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iam:PassRole","Resource":"arn:aws:iam::*:role/lora-sweep-worker"}]}'
echo "instance profile $name: read/write s3://$LORA_SWEEP_BUCKET only"
