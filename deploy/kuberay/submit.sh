#!/usr/bin/env bash
# Submit a search to the RayCluster of raycluster.yaml as a Ray Job, from your machine:
#
#   kubectl port-forward service/ftsearch-head-svc 8265:8265 &   # the head's Jobs API
#   deploy/kuberay/submit.sh lora.yaml [--study NAME] [--trials N] [--resume]
#
# Ray uploads this project folder with the job (without studies/, .venv/, .git/); the job runs
# `python launcher.py --space SPACE --address auto` on the head, and the trials on the workers.
set -euo pipefail
cd "$(dirname "$0")/../.."

space=${1:?usage: deploy/kuberay/submit.sh SPACE [--study NAME] [--trials N] [--resume]}
shift
address=${RAY_API_SERVER_ADDRESS:-http://127.0.0.1:8265}

# The cluster answers only clients that send its token.
export RAY_AUTH_MODE=token
RAY_AUTH_TOKEN=$(kubectl get secret ftsearch-ray-token -o jsonpath='{.data.auth_token}' | base64 --decode)
export RAY_AUTH_TOKEN

job=$(python launcher.py submit --space "$space" --address "$address" "$@")
echo "submitted $job; follow it with:"
echo "  RAY_AUTH_MODE=token RAY_AUTH_TOKEN=... python launcher.py jobs logs $job --address $address"
python launcher.py jobs status "$job" --address "$address"
