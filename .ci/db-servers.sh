#!/usr/bin/env bash
# PostgreSQL and MariaDB on 127.0.0.1 for the database tests, as the tests expect them by default:
#   postgres://postgres@127.0.0.1:5432/test  (trust auth from 127.0.0.1)
#   mysql://root@127.0.0.1:3306/test         (root, empty password over TCP)
# Installs from Debian only what is missing and starts only what is down (no systemd needed).
# Safe to re-run; every step is skipped when already done. Run as root, from .ci/run.
set -euo pipefail

log() { printf '[ci] %s\n' "$*" >&2; }
wait_until() { # wait_until SECONDS CMD... : retry CMD once a second
  local n=$1; shift
  until "$@" >/dev/null 2>&1; do
    n=$((n - 1)); [ "$n" -gt 0 ] || return 1
    sleep 1
  done
}

# 1. Packages.
need=()
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 && command -v pg_ctlcluster >/dev/null || need+=(postgresql)
[ -x /usr/sbin/mariadbd ] && command -v mysqladmin >/dev/null || need+=(mariadb-server mariadb-client)
if [ ${#need[@]} -gt 0 ]; then
  log "apt-get install ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# 2. PostgreSQL: a cluster, trust for 127.0.0.1, running, database `test`.
pg_up() { pg_isready -q -h 127.0.0.1 -p 5432; }
if [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
  ver=$(ls /usr/lib/postgresql | sort -V | tail -1)
  log "pg_createcluster $ver main"
  pg_createcluster "$ver" main -p 5432 >/dev/null
fi
ver=$(ls /etc/postgresql | sort -V | tail -1)
hba=/etc/postgresql/$ver/main/pg_hba.conf
if ! grep -qE '^host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$hba"; then
  log "trusting 127.0.0.1 in $hba"
  sed -i '1i # nixcache .ci: the tests connect as postgres without a password.\nhost all all 127.0.0.1/32 trust' "$hba"
  pg_up && pg_ctlcluster --skip-systemctl-redirect "$ver" main reload
fi
if ! pg_up; then
  log "starting PostgreSQL $ver/main"
  pg_ctlcluster --skip-systemctl-redirect "$ver" main start
fi
wait_until 60 pg_up || { log "PostgreSQL does not answer on 127.0.0.1:5432"; exit 1; }
pg() { psql -X -q -t -A -h 127.0.0.1 -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }
[ "$(pg -c "SELECT 1 FROM pg_database WHERE datname = 'test'")" = 1 ] || pg -c 'CREATE DATABASE test'

# 3. MariaDB: a data dir, running, root without a password over TCP, database `test`.
my_up() { mysqladmin -h127.0.0.1 -uroot --connect-timeout=2 ping; } # 0 even when access is denied
if [ ! -d /var/lib/mysql/mysql ]; then
  log "mariadb-install-db"
  mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
fi
if ! my_up >/dev/null 2>&1; then
  log "starting MariaDB"
  install -d -o mysql -g mysql /run/mysqld
  start-stop-daemon --start --oknodo --background --chuid mysql --exec /usr/sbin/mariadbd
fi
wait_until 60 my_up || { log "MariaDB does not answer on 127.0.0.1:3306"; exit 1; }
if ! mysql -h127.0.0.1 -uroot -e 'SELECT 1' >/dev/null 2>&1; then
  # A fresh Debian install lets root in only through the socket (unix_socket auth).
  log "allowing root without a password over TCP"
  mysql -uroot <<'EOF'
CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';
ALTER USER 'root'@'127.0.0.1' IDENTIFIED VIA mysql_native_password USING PASSWORD('');
GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD('');
FLUSH PRIVILEGES;
EOF
fi
mysql -h127.0.0.1 -uroot -e 'CREATE DATABASE IF NOT EXISTS test'
log "PostgreSQL and MariaDB ready"
