#!/usr/bin/env bash
# Installs the Debian packages whose programs the tests start for real, when they are missing.
# Arguments: COMMAND=PACKAGE pairs. As root it runs apt-get; otherwise it prints the one command
# to run and fails.
set -euo pipefail

missing=()
for pair in "$@"; do
  command -v "${pair%%=*}" >/dev/null 2>&1 || missing+=("${pair#*=}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "missing system packages: run 'sudo apt-get install -y ${missing[*]}', then make test again" >&2
  exit 1
fi
echo "installing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The packages start system services where systemd runs; the tests start their own on free ports.
if command -v systemctl >/dev/null 2>&1; then
  for package in "${missing[@]}"; do systemctl stop "$package" >/dev/null 2>&1 || true; done
fi
