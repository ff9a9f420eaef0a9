#!/bin/sh
# pip install "$@" in an image build: from the wheelhouse copied to /tmp/install alone when the build was given
# one (an air-gapped build: no index is contacted), else from the package index (PIP_INDEX_URL and the like).
set -e
if ls /tmp/install/*.whl >/dev/null 2>&1; then
    exec pip install --no-index --find-links /tmp/install "$@"
fi
exec pip install "$@"
