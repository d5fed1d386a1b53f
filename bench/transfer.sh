#!/usr/bin/env bash
# 1 GiB upload and download through the tools' URLs against nginx (WebDAV PUT, sendfile GET),
# side by side with the Go and Python mymcp: the rows of the one benchmark (bench/run) for this.
#
#   sudo bench/transfer.sh [bench/run options, e.g. --quick, --rounds N, --skip-python]
exec "$(dirname "$0")/run" --only transfer "$@"
