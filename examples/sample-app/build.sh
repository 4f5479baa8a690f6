#!/bin/sh
# BUILD: turn app.conf into the build artifact.
set -eu
mkdir -p build
grep -v '^#' app.conf > build/app.env
echo "version=${FLEETGATE_VERSION:-dev}" >> build/app.env
echo "built build/app.env"
