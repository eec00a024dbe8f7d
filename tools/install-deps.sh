#!/bin/sh
# Installs what slicegpt-stream needs to build and test on Debian 12.
# CUDA is optional and not installed here: configure finds nvcc if present.
# gnuplot-nox draws the plots of `slicegpt-stream report` (run as a program;
# nothing links it).
set -eu
SUDO=
[ "$(id -u)" = 0 ] || SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    build-essential autoconf automake pkg-config \
    liburing-dev libzstd-dev zlib1g-dev libopenblas-dev liblapacke-dev libcjson-dev libpcre2-dev \
    gnuplot-nox \
    python3 python3-pip ca-certificates >/dev/null
