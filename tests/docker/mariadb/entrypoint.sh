#!/bin/sh
# First start: create the data directory, the root password, the database and its user, as
# the official image does; every start: mariadbd as PID 1 with the arguments given.
set -eu
DATADIR=/var/lib/mysql
quote() { printf "%s" "$1" | sed "s/'/''/g"; }

if [ ! -d "$DATADIR/mysql" ]; then
    mariadb-install-db --user=mysql --datadir="$DATADIR" --skip-test-db \
        --auth-root-authentication-method=normal >/dev/null
    mariadbd --user=mysql --datadir="$DATADIR" --skip-networking --socket=/run/mysqld/init.sock &
    pid=$!
    for _ in $(seq 100); do
        mariadb -S /run/mysqld/init.sock -e "SELECT 1" >/dev/null 2>&1 && break
        sleep 0.1
    done
    root=$(quote "${MYSQL_ROOT_PASSWORD:-}")
    {
        echo "ALTER USER 'root'@'localhost' IDENTIFIED BY '$root';"
        echo "CREATE USER 'root'@'%' IDENTIFIED BY '$root'; GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;"
        if [ -n "${MYSQL_DATABASE:-}" ]; then
            echo "CREATE DATABASE IF NOT EXISTS \`$MYSQL_DATABASE\`;"
        fi
        if [ -n "${MYSQL_USER:-}" ]; then
            echo "CREATE USER '$(quote "$MYSQL_USER")'@'%' IDENTIFIED BY '$(quote "${MYSQL_PASSWORD:-}")';"
            [ -n "${MYSQL_DATABASE:-}" ] && echo "GRANT ALL ON \`$MYSQL_DATABASE\`.* TO '$(quote "$MYSQL_USER")'@'%';"
        fi
        echo "FLUSH PRIVILEGES;"
    } | mariadb -S /run/mysqld/init.sock
    kill "$pid"
    wait "$pid" || true
fi
exec mariadbd --user=mysql --datadir="$DATADIR" --socket=/run/mysqld/mysqld.sock "$@"
