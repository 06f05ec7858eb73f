#!/usr/bin/env bash
# Regenerates src/proto/ from protos/ (REAPI, written in this project) and the
# Google common protos shipped by the google-proto-files npm package.
# Needs protoc (Debian: apt-get install -y protobuf-compiler) and `npm ci`.
# The generated code is committed, so building and testing never need protoc.
set -euo pipefail
cd "$(dirname "$0")/.."
GOOGLE=node_modules/google-proto-files
OUT=src/proto
rm -rf "$OUT"
mkdir -p "$OUT"
protoc \
  --plugin=protoc-gen-ts_proto=node_modules/.bin/protoc-gen-ts_proto \
  --ts_proto_out="$OUT" \
  --ts_proto_opt=outputServices=grpc-js,esModuleInterop=true,importSuffix=.js,env=node,useDate=false,outputJsonMethods=false,forceLong=number \
  -I protos -I "$GOOGLE" \
  build/bazel/remote/execution/v2/remote_execution.proto \
  build/bazel/semver/semver.proto \
  google/bytestream/bytestream.proto \
  google/longrunning/operations.proto \
  google/rpc/status.proto \
  google/rpc/code.proto \
  google/rpc/error_details.proto \
  repr/run/v1/run.proto \
  repr/worker/v1/worker.proto
echo "generated $(find "$OUT" -name '*.ts' | wc -l) files under $OUT"
