#!/bin/sh
# A STAND-IN for manifests/base's postgres:16.10-bookworm on machines that reach no registry, built the way
# images/base-image.sh builds the project's base: Debian bookworm by debootstrap (minbase + postgresql-15), the
# postgres user moved to UID/GID 999 (the official image's, which the StatefulSet runs as), and an entrypoint that
# keeps the official image's contract as far as the manifest uses it (POSTGRES_USER, POSTGRES_PASSWORD,
# POSTGRES_DB, PGDATA, *.sql in /docker-entrypoint-initdb.d run once on an empty data directory, password auth
# for TCP clients). Imported into the Docker engine as NAME (default resume-ner-postgres:bookworm); the root file
# system is cached as a tarball keyed by this script's hash. Needs root (debootstrap).
#   RESUME_NER_CACHE  the cache (default: $HOME/.cache/resume-ner)
set -eu
name=${1:-resume-ner-postgres:bookworm}
cache=${RESUME_NER_CACHE:-$HOME/.cache/resume-ner}
tarball=$cache/postgres-bookworm-$(sha256sum "$0" | cut -c1-16).tar
if docker image inspect "$name" >/dev/null 2>&1; then
    echo "$name: already in the engine"; exit 0
fi
if [ ! -f "$tarball" ]; then
    mkdir -p "$cache"
    mirror=${DEBIAN_MIRROR:-$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | grep -v security | head -n 1)}
    mirror=${mirror:-http://deb.debian.org/debian}
    rootfs=$(mktemp -d "$cache/rootfs.XXXXXX")
    trap 'rm -rf "$rootfs" "$rootfs.log"' EXIT
    debootstrap --variant=minbase --include=postgresql-15 bookworm "$rootfs" "$mirror" > "$rootfs.log" 2>&1 || {
        tail -20 "$rootfs.log" >&2; exit 1; }
    old_uid=$(chroot "$rootfs" id -u postgres); old_gid=$(chroot "$rootfs" id -g postgres)
    chroot "$rootfs" groupmod -g 999 postgres
    chroot "$rootfs" usermod -u 999 -g 999 postgres
    find "$rootfs" -xdev \( -uid "$old_uid" -o -gid "$old_gid" \) -exec chown -h 999:999 {} +
    rm -rf "$rootfs/var/lib/postgresql/15" "$rootfs/etc/postgresql/15" \
        "$rootfs/var/cache/apt/archives"/*.deb "$rootfs/var/lib/apt/lists"/*
    install -d -o 999 -g 999 -m 2775 "$rootfs/var/run/postgresql"
    install -d -m 755 "$rootfs/docker-entrypoint-initdb.d"
    cat > "$rootfs/usr/local/bin/docker-entrypoint.sh" <<'ENTRYPOINT'
#!/bin/sh
# The stand-in's entrypoint (tests/cluster/k8s/postgres-image.sh): initialise PGDATA once, then run the server.
set -eu
[ "${1:-postgres}" = postgres ] || exec "$@"
: "${PGDATA:=/var/lib/postgresql/data}" "${POSTGRES_USER:=postgres}" "${POSTGRES_DB:=$POSTGRES_USER}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required to initialise the database}"
    mkdir -p "$PGDATA" && chmod 700 "$PGDATA"
    pwfile=$(mktemp) && printf '%s' "$POSTGRES_PASSWORD" > "$pwfile"
    initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 -D "$PGDATA"
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start
    if [ "$POSTGRES_DB" != postgres ]; then
        psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d postgres -c "CREATE DATABASE \"$POSTGRES_DB\""
    fi
    for f in /docker-entrypoint-initdb.d/*.sql; do
        [ -f "$f" ] && psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" -f "$f"
    done
    pg_ctl -D "$PGDATA" -m fast -w stop
fi
exec postgres -D "$PGDATA" -c listen_addresses='*'
ENTRYPOINT
    chmod 755 "$rootfs/usr/local/bin/docker-entrypoint.sh"
    tar -C "$rootfs" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
fi
docker import -c 'ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/bin:/usr/bin:/bin' -c 'USER 999' \
    -c 'ENV PGDATA=/var/lib/postgresql/data' -c 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
    -c 'CMD ["postgres"]' -c 'EXPOSE 5432' "$tarball" "$name" >/dev/null
echo "$name: imported from $tarball"
