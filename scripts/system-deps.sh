#!/bin/sh
# System packages the test suite needs on a fresh Debian machine: OpenSSH's sshd for
# the SSH transport tests, nginx for the reverse-proxy tests (tests/test_http_nginx.py).
# Installs only what is missing (needs root, as CI has).
set -e
missing=""
[ -x /usr/sbin/sshd ] || missing="$missing openssh-server"
[ -x /usr/sbin/nginx ] || missing="$missing nginx-light"
# restic and borg: the peers bench/bench_chunked.py measures our chunked pushes against
command -v restic >/dev/null || missing="$missing restic"
command -v borg >/dev/null || missing="$missing borgbackup"
if [ -n "$missing" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "missing:$missing and this is not root: install it (apt-get install$missing)" >&2
        exit 1
    fi
    apt-get update -qq
    # shellcheck disable=SC2086 (one word per package)
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi
