#!/bin/sh
# System packages the test suite needs on a fresh Debian machine: OpenSSH's sshd for
# the SSH transport tests. Installs only what is missing (needs root, as CI has).
set -e
if [ ! -x /usr/sbin/sshd ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "openssh-server is missing and this is not root: install it (apt-get install openssh-server)" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server >/dev/null
fi
