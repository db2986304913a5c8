#!/usr/bin/env bash
# Installs the Debian packages the project and its tests use, when any is missing (needs root, as on CI).
set -euo pipefail
# nodejs (with npm) runs Tencent's @wecom/crypto in the WeCom interoperability test.
# baresip-core and sip-tester (SIPp) are the real SIP peers of the phone line tests.
# rabbitmq-server (Rasa's event broker) and nginx (the load balancer in front of the gateways and the action
# servers) belong to the cluster profile (make cluster) and its tests.
packages=(chromium postgresql redis-server fonts-noto-cjk espeak-ng sox ffmpeg nodejs baresip-core sip-tester
  rabbitmq-server nginx)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Debian packages npm apart from nodejs; other builds of nodejs bring it along.
command -v npm >/dev/null 2>&1 || missing+=(npm)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "ensure-apt: missing Debian packages: ${missing[*]} (run as root: apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "ensure-apt: installing ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
