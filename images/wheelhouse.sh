#!/usr/bin/env bash
# The wheelhouse of an air-gapped image build: wheels of torch==2.13.0 (the CPU build), of LOCK (default
# requirements.lock) and of the project's build requirements, made by pip on this machine (which reaches the
# package index and the local torch wheel), kept in the cache under the hash of LOCK and pyproject.toml, and
# linked into build/wheelhouse, where images/Dockerfile installs from with --no-index. Run from the repository
# root with the project's Python (PYTHON, default .venv/bin/python).
#   RESUME_NER_CACHE  the cache (default: $HOME/.cache/resume-ner)
set -euo pipefail
lock=${1:-requirements.lock}
python=${PYTHON:-.venv/bin/python}
cache=${RESUME_NER_CACHE:-$HOME/.cache/resume-ner}
key=$(cat "$lock" pyproject.toml | sha256sum | cut -c1-16)
wheels=$cache/wheelhouse-$key
if [ ! -f "$wheels/.complete" ]; then
    rm -rf "$wheels" && mkdir -p "$wheels"
    echo "pip wheel torch==2.13.0, $lock and the build requirements -> $wheels"
    # (pip warns once per package about this machine's local index folders: those lines are dropped)
    "$python" -m pip wheel --quiet --wheel-dir "$wheels" torch==2.13.0 -r "$lock" "setuptools>=68" wheel 2>&1 \
        | { grep -v "^WARNING: Location" >&2 || true; }
    touch "$wheels/.complete"
fi
rm -rf build/wheelhouse && mkdir -p build
cp -al "$wheels" build/wheelhouse 2>/dev/null || cp -a "$wheels" build/wheelhouse
echo "build/wheelhouse: $(ls build/wheelhouse | wc -l) wheels ($(du -sh build/wheelhouse | cut -f1)), key $key"
