"""The services a scaled-out pipeline runs on, started the way their users start them, on 127.0.0.1.

    python -m flows.services up       # Postgres, MLflow server on it, Prefect server, work pools
    python -m flows.services worker --pool zhnlp-gpu     # a process worker in this checkout
    python -m flows.services down | status

- Postgres from Debian's ``postgresql`` package when installed, else from the ``pgserver`` wheel
  (or the one in ``ZHNLP_PG_BIN``), remembered in ``.services/pg_bin``, data in
  ``$ZHNLP_SERVICES_DIR/postgres`` (default ``.services/`` in the project), user ``zhnlp`` with a
  generated password kept in a 0600 pgpass file (``PGPASSFILE``), never on a command line. Postgres
  refuses to run as root; as root it runs as the ``postgres`` user (or a ``zhnlp-pg`` system user).
- ``mlflow server`` on database ``mlflow`` with proxied artifacts (``--serve-artifacts``).
- ``prefect server start``, on database ``prefect`` when ``PREFECT_DB=postgres``, else its SQLite.
- Work pools, their stage deployments and slot limits from params (``python -m flows.pools setup``).

Ports: ``ZHNLP_PG_PORT`` (5433), ``ZHNLP_MLFLOW_PORT`` (5000), ``ZHNLP_PREFECT_PORT`` (4200).
"""

from __future__ import annotations

import argparse
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PG_USER = "zhnlp"


class Services:
    def __init__(self, home: Path | None = None, env: dict | None = None):
        self.env = dict(os.environ if env is None else env)
        self.home = Path(home or self.env.get("ZHNLP_SERVICES_DIR") or ROOT / ".services").resolve()
        self.pg_port = int(self.env.get("ZHNLP_PG_PORT", 5433))
        self.mlflow_port = int(self.env.get("ZHNLP_MLFLOW_PORT", 5000))
        self.prefect_port = int(self.env.get("ZHNLP_PREFECT_PORT", 4200))
        self.pgdata, self.pgpass = self.home / "postgres", self.home / "pgpass"

    # -- what clients need -------------------------------------------------------------------------
    def client_env(self) -> dict[str, str]:
        return {
            "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{self.mlflow_port}",
            "PREFECT_API_URL": f"http://127.0.0.1:{self.prefect_port}/api",
        }

    def database_uri(self, db: str, driver: str = "postgresql") -> str:
        return f"{driver}://{PG_USER}@127.0.0.1:{self.pg_port}/{db}"  # the password comes from PGPASSFILE

    # -- Postgres ----------------------------------------------------------------------------------
    def pg_bin(self, tool: str) -> str:
        return str(self._pg_bindir() / tool)

    def _pg_bindir(self) -> Path:
        """ZHNLP_PG_BIN, else the one that made the data dir, else Debian's newest, else the pgserver wheel."""
        if self.env.get("ZHNLP_PG_BIN"):
            return Path(self.env["ZHNLP_PG_BIN"])
        chosen = self.home / "pg_bin"
        if chosen.exists():
            return Path(chosen.read_text().strip())
        import glob
        import importlib.util

        debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(Path(p).parts[-3]), reverse=True)
        if debian:
            found = Path(debian[0]).parent
        elif (spec := importlib.util.find_spec("pgserver")) and spec.submodule_search_locations:  # located, not imported
            found = self._reachable(Path(spec.submodule_search_locations[0]) / "pginstall") / "bin"
        elif shutil.which("pg_ctl"):
            found = Path(shutil.which("pg_ctl")).resolve().parent
        else:
            sys.exit("error: no Postgres server found: `pip install pgserver` (make install does), apt-get install postgresql, or set ZHNLP_PG_BIN")
        self.home.mkdir(parents=True, exist_ok=True)
        chosen.write_text(str(found))
        return found

    def check_prefect_extensions(self) -> None:
        """Prefect's Postgres schema needs pg_trgm, a contrib extension the pgserver wheel does not ship."""
        share = subprocess.run([self.pg_bin("pg_config"), "--sharedir"], capture_output=True, text=True).stdout.strip()
        if not (Path(share) / "extension" / "pg_trgm.control").exists():
            sys.exit(f"error: PREFECT_DB=postgres needs the pg_trgm extension, missing from the Postgres in {self._pg_bindir()}: "
                     "apt-get install postgresql postgresql-contrib (then remove .services/), or leave PREFECT_DB unset")

    def _reachable(self, install: Path) -> Path:
        """As root, Postgres runs as another user, who may not reach a venv under /root: copy it here."""
        user = self._pg_user()
        if not user:
            return install
        try:
            if subprocess.run([str(install / "bin" / "postgres"), "--version"], user=user, capture_output=True).returncode == 0:
                return install
        except PermissionError:
            pass  # that user can't reach the venv
        # keep the wheel's layout: the binaries find their vendored libraries at $ORIGIN/../../../pgserver.libs
        local = self.home / "pg" / "pgserver" / "pginstall"
        if not (local / "bin" / "postgres").exists():
            shutil.copytree(install, local, symlinks=True)
            libs = install.parent.parent / "pgserver.libs"
            if libs.is_dir():
                shutil.copytree(libs, self.home / "pg" / "pgserver.libs", symlinks=True, dirs_exist_ok=True)
            for path in [self.home / "pg", *(self.home / "pg").rglob("*")]:
                if path.is_dir():
                    path.chmod(0o755)
        return local

    def _pg_user(self) -> str | None:
        """None: run as ourselves. As root: a user Postgres accepts."""
        if os.geteuid() != 0:
            return None
        for name in ("postgres", "zhnlp-pg"):
            try:
                return pwd.getpwnam(name).pw_name
            except KeyError:
                continue
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "zhnlp-pg"], check=True)
        return "zhnlp-pg"

    def _as_pg(self, cmd: list[str], **kw) -> subprocess.CompletedProcess:
        user = self._pg_user()
        return subprocess.run(cmd, user=user, group=pwd.getpwnam(user).pw_gid if user else None, extra_groups=[] if user else None,
                              env=self.env | {"HOME": str(self.pgdata), "LC_ALL": "C"}, capture_output=True, text=True, **kw)

    def start_postgres(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        if self._pg_user():
            self.home.chmod(self.home.stat().st_mode | 0o011)  # the Postgres user passes through to its data dir
        user = self._pg_user()
        if not (self.pgdata / "PG_VERSION").exists():
            password = secrets.token_urlsafe(24)
            self.pgdata.mkdir(mode=0o700, exist_ok=True)
            pwfile = self.home / ".initdb-password"
            pwfile.write_text(password + "\n")
            if user:
                shutil.chown(self.pgdata, user)
                shutil.chown(pwfile, user)
            out = self._as_pg([self.pg_bin("initdb"), "-D", str(self.pgdata), "-U", PG_USER, "--auth=scram-sha-256",
                               f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C"])
            pwfile.unlink()
            if out.returncode != 0:
                hint = f" (Postgres runs as user {user}: set ZHNLP_SERVICES_DIR to a directory it can reach)" if user else ""
                sys.exit(f"error: initdb in {self.pgdata} failed: {(out.stderr.strip().splitlines() or ['?'])[-1]}{hint}")
            fd = os.open(self.pgpass, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.write(fd, f"127.0.0.1:*:*:{PG_USER}:{password}\n".encode())
            os.close(fd)
        if self._as_pg([self.pg_bin("pg_ctl"), "-D", str(self.pgdata), "status"]).returncode != 0:
            opts = f"-h 127.0.0.1 -p {self.pg_port} -k {self.pgdata}"
            out = self._as_pg([self.pg_bin("pg_ctl"), "-D", str(self.pgdata), "-l", str(self.pgdata / "server.log"), "-w", "-t", "60", "-o", opts, "start"])
            if out.returncode != 0:
                sys.exit(f"error: Postgres did not start; see {self.pgdata / 'server.log'}: {out.stderr.strip()[-300:]}")
        import psycopg2

        os.environ["PGPASSFILE"] = self.env["PGPASSFILE"] = str(self.pgpass)
        conn = psycopg2.connect(self.database_uri("postgres"))
        conn.autocommit = True
        with conn.cursor() as cur:
            for db in ("mlflow", "prefect"):
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,))
                if not cur.fetchone():
                    cur.execute(f'CREATE DATABASE "{db}"')
        conn.close()

    # -- servers -----------------------------------------------------------------------------------
    def _spawn(self, name: str, cmd: list[str], env: dict, health: str) -> None:
        pidfile = self.home / f"{name}.pid"
        if pidfile.exists() and _alive(int(pidfile.read_text())) and _healthy(health):
            return
        log = open(self.home / f"{name}.log", "ab")
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.home)
        pidfile.write_text(str(proc.pid))
        deadline = time.monotonic() + 180
        while not _healthy(health):
            if proc.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"error: {name} did not start; see {self.home / (name + '.log')}")
            time.sleep(0.5)

    def up(self) -> dict[str, str]:
        self.start_postgres()
        env = self.env | {"PGPASSFILE": str(self.pgpass)}
        bin_dir = Path(sys.executable).parent
        self._spawn("mlflow", [str(bin_dir / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.mlflow_port),
                               "--backend-store-uri", self.database_uri("mlflow"), "--serve-artifacts",
                               "--artifacts-destination", str(self.home / "mlartifacts"), "--workers", "1"],
                    env, f"http://127.0.0.1:{self.mlflow_port}/health")
        prefect_env = env | {"PREFECT_HOME": str(self.home / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        if self.env.get("PREFECT_DB") == "postgres":
            self.check_prefect_extensions()
            prefect_env["PREFECT_API_DATABASE_CONNECTION_URL"] = self.database_uri("prefect", "postgresql+asyncpg")
        self._spawn("prefect", [str(bin_dir / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(self.prefect_port)],
                    prefect_env, f"http://127.0.0.1:{self.prefect_port}/api/health")
        return self.client_env()

    def down(self) -> None:
        for name in ("prefect", "mlflow"):
            pidfile = self.home / f"{name}.pid"
            if pidfile.exists():
                pid = int(pidfile.read_text())
                if _alive(pid):
                    os.killpg(pid, signal.SIGTERM)
                pidfile.unlink()
        if (self.pgdata / "PG_VERSION").exists():
            self._as_pg([self.pg_bin("pg_ctl"), "-D", str(self.pgdata), "-m", "fast", "-w", "stop"])


def worker_command(pool: str, name: str, limit: int = 1) -> list[str]:
    return [str(Path(sys.executable).parent / "prefect"), "worker", "start", "--pool", pool, "--type", "process",
            "--name", name, "--limit", str(limit)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "worker"])
    parser.add_argument("--pool", default="cpu", help="a work pool, or a resource class of flow.pools (cpu, gpu)")
    parser.add_argument("--name", help="worker name (default: <host>-<pool>-<pid>)")
    args = parser.parse_args()
    services = Services()
    if args.command == "up":
        env = services.up()
        os.environ.update(env)
        from flows.pools import main as pools_main

        sys.argv = ["flows.pools", "setup"]
        pools_main()
        print("services up; point clients at them with:")
        print("".join(f"  export {k}={v}\n" for k, v in env.items()), end="")
    elif args.command == "down":
        services.down()
    else:
        if not os.environ.get("PREFECT_API_URL"):
            sys.exit("error: PREFECT_API_URL is not set; export the values `make services` printed")
        import socket

        from flows.pipeline import flow_settings
        from zhnlp.errors import UserError

        try:
            pool = flow_settings(ROOT).pools.get(args.pool, args.pool)  # `make worker POOL=gpu` means flow.pools.gpu
        except UserError as err:
            sys.exit(f"error: {err}")
        name = args.name or f"{socket.gethostname()}-{pool}-{os.getpid()}"
        env = os.environ | {"ZHNLP_CHECKOUT": str(ROOT), "ZHNLP_WORKER": name}
        os.execvpe(worker_command(pool, name)[0], worker_command(pool, name), env)


if __name__ == "__main__":
    main()
