#!/bin/sh
# Development keys for firmware.toml: keys/fit (the FIT's signature, checked by U-Boot) and
# keys/update (the update bundles', checked by SWUpdate on the device). Made once; kept.
set -eu
cd "$(dirname "$0")"
for name in fit update; do
  [ -f "keys/$name/$name.key" ] && continue
  mkdir -p "keys/$name"
  openssl req -batch -new -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=$name" \
    -keyout "keys/$name/$name.key" -out "keys/$name/$name.crt" 2>/dev/null
  echo "made keys/$name"
done
