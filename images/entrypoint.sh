#!/bin/sh
# The image's entrypoint: `docker run IMAGE train ...` runs `resume-ner train ...`, and a command the image has
# runs as given: the `sh -ec ...` of a KFP component (kfp.local's DockerRunner keeps the entrypoint; Kubernetes
# replaces it), `python3 -m resume_ner.cli.train ...`, `torchrun ...`.
if [ "$#" -gt 0 ] && [ "${1#-}" = "$1" ] && command -v "$1" >/dev/null 2>&1; then
    exec "$@"
fi
exec resume-ner "$@"
