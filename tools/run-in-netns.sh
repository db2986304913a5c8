#!/bin/sh
# Run a command in a fresh network namespace where only loopback exists, so SIP and RTP cannot leave the machine.
#
#   tools/run-in-netns.sh .venv/bin/python -m pytest -m sip tests/ivr
#
# Exits with the command's status, or 77 (the "skipped" status of automake and friends) when this machine
# cannot create network namespaces (unprivileged user, seccomp, no unshare).
#
# Besides `lo` coming up, loopback also gets 198.18.0.1/32 (RFC 2544 benchmarking range) and the default route:
# baresip 1.0.0 takes its media address from the interface of the default route and will not use a
# 127.0.0.0/8 address, so with only 127.0.0.1 it cannot open RTP sockets ("rtp_listen failed ... Cannot assign
# requested address"). The extra address sits on lo; packets to it or through that route never leave the
# namespace. Inside, BANKBOT_IN_NETNS=1 is set (tests/ivr/peers.py: in_netns()).
set -eu

if [ "$#" -eq 0 ]; then
    echo "usage: $0 COMMAND [ARG...]" >&2
    exit 2
fi

if ! command -v unshare >/dev/null 2>&1; then
    echo "run-in-netns: unshare(1) is not installed; network namespaces unavailable" >&2
    exit 77
fi
if ! unshare -n true >/dev/null 2>&1; then
    echo "run-in-netns: cannot create a network namespace here (needs root or CAP_SYS_ADMIN); not running: $*" >&2
    exit 77
fi

exec unshare -n sh -c '
    set -e
    ip link set lo up
    ip addr add 198.18.0.1/32 dev lo
    ip route add default dev lo
    BANKBOT_IN_NETNS=1
    export BANKBOT_IN_NETNS
    exec "$@"
' run-in-netns "$@"
