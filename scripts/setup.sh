#!/usr/bin/env bash
# Set up everything Lark needs on a Debian 12 machine, as root: system packages, a virtual
# environment in .venv with Lark installed in it, and (with --demo) run the main demo.
# Idempotent: a second run only checks what is already there.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

packages=(nftables iptables iproute2 iperf3 python3-venv python3-dev gcc libnftables1
          debootstrap ethtool procps util-linux curl chromium fonts-dejavu-core udhcpc dnsmasq-base
          globus-gridftp-server-progs globus-gass-copy-progs xrootd-server)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "lark setup: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Lark installs into its own venv: the unrelated parsing library on PyPI also imports as `lark`.
if [ ! -x .venv/bin/python ]; then
  /usr/bin/python3 -m venv .venv
fi
stamp=.venv/.lark-installed
# lark-wrap is installed as a copy (a plain script, not an entry point): reinstall when it changes too
if [ ! -f "$stamp" ] || [ setup.cfg -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ lark/wrap.py -nt "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -qq -e '.[test,plot,metrics,iptables,report,transfer]'
  touch "$stamp"
fi

if [ "${1:-}" = "--demo" ]; then
  exec .venv/bin/lark pool demo
fi
