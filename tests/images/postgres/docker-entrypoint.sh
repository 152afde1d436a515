#!/usr/bin/env bash
# Entrypoint of matrix.stack's PostgreSQL test image, written for it from the documented behaviour of
# the official image's entrypoint (https://hub.docker.com/_/postgres, "Environment Variables" and
# "Initialization scripts"):
#   - arguments starting with "-" are options for postgres;
#   - on an empty PGDATA: initdb with POSTGRES_USER (default postgres), POSTGRES_PASSWORD and
#     POSTGRES_INITDB_ARGS, remote connections authenticated by POSTGRES_HOST_AUTH_METHOD (default
#     scram-sha-256), POSTGRES_DB created, then /docker-entrypoint-initdb.d/* run once in name order
#     against a server listening on the Unix socket only (*.sh executed if executable, else sourced;
#     *.sql and *.sql.gz through psql);
#   - every POSTGRES_* variable may be given as <name>_FILE (a file holding the value), never both;
#   - then postgres is exec'd as PID 1 with the given arguments.
# Started as root it takes ownership of PGDATA and drops to the postgres user, as the official image.
# Not implemented: POSTGRES_INITDB_WALDIR, the nss_wrapper for arbitrary UIDs (run as 999).
set -Eeuo pipefail

SOCKET_DIR=/var/run/postgresql

fail() { echo "docker-entrypoint.sh: error: $*" >&2; exit 1; }

# file_env NAME [DEFAULT]: NAME from NAME or from the file named by NAME_FILE.
file_env() {
    local name="$1" file_name="${1}_FILE" value="${2:-}"
    if [ -n "${!name:-}" ] && [ -n "${!file_name:-}" ]; then
        fail "both $name and $file_name are set (they are exclusive)"
    fi
    if [ -n "${!name:-}" ]; then
        value="${!name}"
    elif [ -n "${!file_name:-}" ]; then
        [ -r "${!file_name}" ] || fail "$file_name=${!file_name} is not a readable file"
        value="$(< "${!file_name}")"
    fi
    export "$name=$value"
    unset "$file_name"
}

psql_init() {
    psql -v ON_ERROR_STOP=1 --no-password --no-psqlrc --username "$POSTGRES_USER" "$@"
}

run_init_scripts() {
    local f
    for f in /docker-entrypoint-initdb.d/*; do
        [ -e "$f" ] || continue
        case "$f" in
            *.sh)
                if [ -x "$f" ]; then
                    echo "docker-entrypoint.sh: running $f" >&2
                    "$f"
                else
                    echo "docker-entrypoint.sh: sourcing $f" >&2
                    # shellcheck disable=SC1090
                    . "$f"
                fi
                ;;
            *.sql) echo "docker-entrypoint.sh: running $f" >&2; psql_init --dbname "$POSTGRES_DB" -f "$f" ;;
            *.sql.gz) echo "docker-entrypoint.sh: running $f" >&2; gzip -dc "$f" | psql_init --dbname "$POSTGRES_DB" ;;
            *) echo "docker-entrypoint.sh: ignoring $f" >&2 ;;
        esac
    done
}

init_database() {
    file_env POSTGRES_PASSWORD
    file_env POSTGRES_USER postgres
    file_env POSTGRES_DB "$POSTGRES_USER"
    file_env POSTGRES_INITDB_ARGS
    local auth="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"
    if [ -z "$POSTGRES_PASSWORD" ] && [ "$auth" != trust ]; then
        fail "the database is not initialized and no superuser password is set: set POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE (or POSTGRES_HOST_AUTH_METHOD=trust)"
    fi
    echo "docker-entrypoint.sh: initializing $PGDATA" >&2
    # shellcheck disable=SC2086
    initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") $POSTGRES_INITDB_ARGS >&2
    printf '\nhost all all all %s\n' "$auth" >> "$PGDATA/pg_hba.conf"

    # A server on the Unix socket only while the init scripts run.
    pg_ctl -D "$PGDATA" -w -o "-c listen_addresses='' -c unix_socket_directories=$SOCKET_DIR -p ${PGPORT:-5432}" start >&2
    export PGPASSWORD="${PGPASSWORD:-$POSTGRES_PASSWORD}"
    if [ "$POSTGRES_DB" != postgres ]; then
        psql_init --dbname postgres --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";' >&2
    fi
    run_init_scripts
    pg_ctl -D "$PGDATA" -m fast -w stop >&2
    unset PGPASSWORD
    echo "docker-entrypoint.sh: initialization complete" >&2
}

if [ "${1:-}" != "" ] && [ "${1:0:1}" = "-" ]; then
    set -- postgres "$@"
fi

if [ "${1:-}" = postgres ]; then
    # These binaries default to /tmp for the socket; the official (Debian-built) image uses this
    # directory. Given first, so that a later `-c unix_socket_directories=...` still wins.
    shift
    set -- postgres -c "unix_socket_directories=$SOCKET_DIR" "$@"
    if [ "$(id -u)" = 0 ]; then
        mkdir -p "$PGDATA"
        chown -R postgres:postgres "$PGDATA" /var/run/postgresql
        chmod 700 "$PGDATA"
        exec setpriv --reuid=postgres --regid=postgres --init-groups "$BASH_SOURCE" "$@"
    fi
    mkdir -p "$PGDATA"
    chmod 700 "$PGDATA" 2>/dev/null || true
    if [ ! -s "$PGDATA/PG_VERSION" ]; then
        init_database
    fi
fi

exec "$@"
