"""The MLflow and Prefect UIs checked in a real browser: ``make ui-check`` (``python -m tools.ui_check``).

Starts ``mlflow ui`` on ``$MLFLOW_TRACKING_URI`` and ``prefect server start`` (``$PREFECT_HOME``) on free
127.0.0.1 ports, opens the key pages in headless Chromium over the DevTools protocol, waits until each
shows the run and model names it should, and saves a screenshot of each under ``ui-check/``:

- runs: the experiment's finetune runs grouped by ``tags.zhnlp.model``. Grouping and columns are UI
  state in MLflow, not URL parameters: the page opens the UI's shared view ``?viewStateShareKey=K``,
  whose state this check stores in the experiment tag ``mlflow.sharedViewState.K`` (as "Share" does);
- metrics: one finetune run's model metrics; registry: the registered model page;
- flow: the latest ``zhnlp-pipeline`` flow run that ran stages (its graph); if the Prefect DB has none and
  the DAG is up to date, one is recorded first by forcing a few quick stages alone (``flows.pipeline
  --force --single-item``: a CAN stage and the leaderboard after it; outputs and dvc.lock stay the same);
  artifact: that run's markdown summary.

One line per failed page (its URL and what was missing); exit status 1 if any failed.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote, urlencode

import flows  # noqa: F401 - the project's Prefect defaults (PREFECT_HOME=.prefect, no analytics)

ROOT = Path(__file__).resolve().parents[1]
PAGES = ("runs", "metrics", "registry", "flow", "artifact")
FLOW_NAME, ARTIFACT_KEY = "zhnlp-pipeline", "zhnlp-pipeline-summary"
SHARE_KEY, GROUP_TAG = "zhnlp-finetune-by-model", "zhnlp.model"
FINETUNE_FILTER = "tags.`zhnlp.stage_kind` LIKE 'finetune%'"
RUN_TAGS = ("zhnlp.task", "zhnlp.backbone", "zhnlp.recipe", "zhnlp.stage_kind")  # columns beside the grouping
METRICS = ("dev.score", "test_public.score", "dev.macro_f1", "training.seconds")  # score: each task's official metric
ML_VIEW = {"workflowType": "machine_learning"}  # MLflow's "Model training" view, not its GenAI default
# MLflow's localStorage as if its assistant panel, which opens itself on a first visit, had been closed
NO_ASSISTANT = {"mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true", "mlflow.assistant.panelOpen_v1": "false"}
WINDOW = (1600, 1000)


class PageError(Exception):
    """A page that failed: the message is one line naming the URL and what was wrong."""


class Page(NamedTuple):
    url: str
    expected: list[str]  # strings its text must show
    height: int = WINDOW[1]  # of the screenshot


def shared_view_state(search_filter: str, group_tag: str, columns: list[str]) -> dict:
    """Experiment-page state as the UI's "Share" button stores it; keys left out keep the UI defaults.
    Columns show in the given order after the run name (widened: stage names are long), start and duration."""
    group_by = {"aggregateFunction": "average", "groupByKeys": [{"mode": "tag", "groupByData": group_tag}]}
    order = ["attributes.`Run Name`", "runDateAndNestInfo", "duration", *columns]
    return {"searchFilter": search_filter, "selectedColumns": columns, "groupBy": group_by,
            "columnOrder": order, "columnWidths": {order[0]: 250}}  # noqa: E127


def mlflow_url(base: str, *route: str, **query: str) -> str:
    """A page of MLflow's UI (a hash route), in its "Model training" view."""
    return f"{base}/#/{'/'.join(quote(part, safe='') for part in route)}?{urlencode(query | ML_VIEW)}"


def missing(text: str, expected: list[str]) -> list[str]:
    """The expected strings the page text lacks."""
    return [e for e in expected if e not in text]


def tag(run: dict, key: str) -> str | None:
    return next((t["value"] for t in run["data"].get("tags", []) if t["key"] == key), None)


def http(url: str, body: dict | None = None, timeout: float = 30, raw: bool = False):
    """GET (or POST ``body`` as JSON) and decode the JSON answer; ``raw``: the bytes."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.read() if raw else json.loads(resp.read() or b"{}")


def graph_stages() -> list[str]:
    """Quick stages with an edge between them, for a recorded flow run's graph: the leaderboard and one CAN stage it reads."""
    from flows.dag import load_dag

    dag = load_dag(ROOT)
    can = [u for u in dag["leaderboard"].upstream if u.startswith("can@")] if "leaderboard" in dag else []
    return [*can[:1], "leaderboard"] if can else list(dag)[-1:]


def free_ports(n: int) -> list[int]:
    with contextlib.ExitStack() as stack:  # all bound at once: n different ports
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def spawn(stack: contextlib.ExitStack, cmd: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    """Start ``cmd`` in its own process group, stopped when ``stack`` closes (also on errors and Ctrl-C)."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    stack.callback(stop, proc)
    return proc


def stop(proc: subprocess.Popen) -> None:
    for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
            return


def wait_until(ready, proc: subprocess.Popen, what: str, log: Path, timeout: float = 180):
    """Poll ``ready()`` until it returns something true, while ``proc`` lives."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise PageError(f"{what} exited with {proc.returncode} (see {log})")
        with contextlib.suppress(OSError):
            if result := ready():
                return result
        time.sleep(0.5)
    raise PageError(f"{what} not ready within {timeout:.0f} s (see {log})")


class Browser:
    """Headless Chromium on one page, driven over the DevTools protocol (websocket)."""

    def __init__(self, stack: contextlib.ExitStack, exe: str, profile: Path, log: Path):
        from websockets.sync.client import connect  # a dependency of prefect

        args = [exe, "--headless", "--no-sandbox", f"--user-data-dir={profile}", "--remote-debugging-port=0",  # local pages only
                f"--window-size={WINDOW[0]},{WINDOW[1]}", "--hide-scrollbars", "--no-first-run", "--lang=en-US",
                "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "about:blank"]  # WebGL for Prefect's graph
        proc = spawn(stack, args, log)
        port_file = profile / "DevToolsActivePort"
        port = wait_until(lambda: port_file.is_file() and port_file.read_text().split()[:1], proc, "chromium", log, 60)[0]
        target = next(t for t in http(f"http://127.0.0.1:{port}/json/list") if t["type"] == "page")
        self.ws, self.next_id = connect(target["webSocketDebuggerUrl"], max_size=None), 0
        stack.callback(self.ws.close)
        self.call("Page.enable")  # or the script below does not run
        items = "".join(f"localStorage.setItem({json.dumps(k)}, {json.dumps(v)});" for k, v in NO_ASSISTANT.items())
        self.call("Page.addScriptToEvaluateOnNewDocument", source=f"try {{ {items} }} catch (e) {{}}")

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while (msg := json.loads(self.ws.recv(timeout=60))).get("id") != self.next_id:
            pass  # an event
        if "error" in msg:
            raise PageError(f"{method}: {msg['error'].get('message')}")
        return msg.get("result", {})

    def text(self) -> str:
        result = self.call("Runtime.evaluate", expression="document.body ? document.body.innerText : ''", returnByValue=True)
        return result.get("result", {}).get("value") or ""

    def check(self, page: Page, shot: Path, timeout: float = 90, settle: float = 3) -> list[str]:
        """Open the page, wait until its text has every expected string, screenshot it; the ones still missing."""
        self.call("Page.navigate", url="about:blank")  # a fresh app per page: no text left from the last one
        self.call("Emulation.setDeviceMetricsOverride", width=WINDOW[0], height=page.height, deviceScaleFactor=1, mobile=False)
        self.call("Page.navigate", url=page.url)
        deadline = time.time() + timeout
        while missing(self.text(), page.expected) and time.time() < deadline:
            time.sleep(1)
        time.sleep(settle)  # charts and the flow graph draw after their data arrives
        shot.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        return missing(self.text(), page.expected)


class Pages:
    """Each page method returns (url, expected strings), or raises PageError when its data is not there."""

    def __init__(self, mlflow: str, prefect: str, args: argparse.Namespace, env: dict, logs: Path):
        self.mlflow, self.prefect, self.args, self.env, self.logs = mlflow, prefect, args, env, logs
        self.api = f"{mlflow}/api/2.0/mlflow"

    @functools.cached_property
    def experiment(self) -> dict:
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "zhnlp")
        try:
            return http(f"{self.api}/experiments/get-by-name?{urlencode({'experiment_name': name})}")["experiment"]
        except urllib.error.HTTPError as err:
            raise PageError(f"{self.mlflow}: experiment {name!r} not found ({err.code}): run the pipeline first") from None

    def search(self, query: str, max_results: int = 1000) -> list[dict]:
        body = {"experiment_ids": [self.experiment["experiment_id"]], "filter": query, "max_results": max_results}
        return http(f"{self.api}/runs/search", body | {"order_by": ["attributes.start_time DESC"]}).get("runs", [])

    def runs(self) -> Page:
        exp = self.experiment
        url = mlflow_url(self.mlflow, "experiments", exp["experiment_id"], "runs", viewStateShareKey=SHARE_KEY)
        if not (finetune := self.search(FINETUNE_FILTER)):
            raise PageError(f"{url}: no finetune runs in experiment {exp['name']!r}")
        latest = {tag(r, "dvc.stage") or r["info"]["run_name"]: r for r in reversed(finetune)}  # older runs may predate the tag
        if untagged := sorted(stage for stage, r in latest.items() if not tag(r, GROUP_TAG)):
            raise PageError(f"{url}: the latest runs of {len(untagged)} finetune stages lack tag {GROUP_TAG} (e.g. {untagged[0]})")
        columns = [f"tags.`{t}`" for t in RUN_TAGS] + [f"metrics.`{m}`" for m in METRICS]
        state = json.dumps(shared_view_state(FINETUNE_FILTER, GROUP_TAG, columns))
        key = f"mlflow.sharedViewState.{SHARE_KEY}"
        http(f"{self.api}/experiments/set-experiment-tag", {"experiment_id": exp["experiment_id"], "key": key, "value": state})
        newest = {tag(r, GROUP_TAG): r["info"]["run_name"] for r in reversed(finetune) if tag(r, GROUP_TAG)}  # top rows
        expected = [f"Group: {model}" for model in sorted(newest)] + sorted(set(newest.values()))
        rows = len(finetune) + len(newest) + 1  # a window as tall as the grid, which draws only the rows in view
        return Page(url, expected, min(6000, max(WINDOW[1], 420 + 32 * rows)))

    def metrics(self) -> Page:
        exp_id = self.experiment["experiment_id"]
        if not (found := self.search(f"attributes.run_name = '{self.args.run}'", 1)):
            raise PageError(f"{self.mlflow}/#/experiments/{exp_id}: no run named {self.args.run!r}")
        keys = sorted(m["key"] for m in found[0]["data"].get("metrics", []))[:3]  # chart titles
        url = mlflow_url(self.mlflow, "experiments", exp_id, "runs", found[0]["info"]["run_id"], "model-metrics")
        return Page(url, [self.args.run] + keys)

    def registry(self) -> Page:
        name, url = self.args.registered_model, mlflow_url(self.mlflow, "models", self.args.registered_model)
        try:
            model = http(f"{self.api}/registered-models/get?{urlencode({'name': name})}")["registered_model"]
        except urllib.error.HTTPError as err:
            raise PageError(f"{url}: registered model {name!r} does not exist ({err.code}); --skip registry to skip") from None
        versions = [int(v["version"]) for v in model.get("latest_versions", [])]
        return Page(url, [name] + ([f"Version {max(versions)}"] if versions else []))

    @functools.cached_property
    def flow_run(self) -> dict | PageError:
        """The latest pipeline flow run that ran stages (a run with nothing stale has an empty graph); when the
        Prefect DB has none and the DAG is up to date, one is recorded first: :func:`graph_stages`, forced alone."""
        api = f"{self.prefect}/api"
        if run := self.latest_run_with_tasks(api):
            return run
        dvc = str(Path(sys.executable).parent / "dvc")
        status = subprocess.run([dvc, "status", "--json"], cwd=ROOT, capture_output=True, text=True)
        if status.returncode != 0 or json.loads(status.stdout or "{}"):
            return PageError(f"{self.prefect}/runs: no {FLOW_NAME} flow run that ran stages, and `dvc status` is not clean: run `make flow` first")
        with open(self.logs / "flow.log", "wb") as out:
            cmd, env = [sys.executable, "-m", "flows.pipeline", "--force", "--single-item", *graph_stages()], self.env | {"PREFECT_API_URL": api}
            rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
        if rc != 0 or not (run := self.latest_run_with_tasks(api)):
            return PageError(f"{self.prefect}/runs: recording a {FLOW_NAME} flow run failed (exit {rc}, see {self.logs / 'flow.log'})")
        return run

    @staticmethod
    def latest_run_with_tasks(api: str, look_back: int = 50) -> dict | None:
        query = {"flows": {"name": {"any_": [FLOW_NAME]}}, "sort": "START_TIME_DESC", "limit": look_back}
        for run in http(f"{api}/flow_runs/filter", query):
            if http(f"{api}/task_runs/count", {"flow_runs": {"id": {"any_": [run["id"]]}}}):
                return run
        return None

    def flow(self) -> Page:
        if isinstance(run := self.flow_run, PageError):
            raise run
        return Page(f"{self.prefect}/runs/flow-run/{run['id']}", [FLOW_NAME, run["name"]])

    def artifact(self) -> Page:
        if isinstance(run := self.flow_run, PageError):
            raise run
        query = {"artifacts": {"flow_run_id": {"any_": [run["id"]]}, "key": {"any_": [ARTIFACT_KEY]}}}
        if not (found := http(f"{self.prefect}/api/artifacts/filter", query)):
            raise PageError(f"{self.prefect}/runs/flow-run/{run['id']}?tab=Artifacts: flow run {run['name']} has no {ARTIFACT_KEY} artifact")
        return Page(f"{self.prefect}/artifacts/artifact/{found[0]['id']}", [ARTIFACT_KEY, "zhnlp pipeline run", "Totals:"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip", action="append", default=[], choices=PAGES, help="a page not to check (repeatable)")
    parser.add_argument("--run", default="finetune_clue@char-tnews", help="the run whose metrics page is checked")
    parser.add_argument("--registered-model", default="zhnlp-tnews")
    parser.add_argument("--out", type=Path, default=ROOT / "ui-check", help="screenshots and server logs (default: ui-check/)")
    args = parser.parse_args()
    if not (exe := os.environ.get("CHROMIUM") or shutil.which("chromium")):
        sys.exit("error: ui-check needs Chromium: apt-get install chromium (or set CHROMIUM to its path)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the cleanup below runs on `kill` as on Ctrl-C
    (logs := args.out / "logs").mkdir(parents=True, exist_ok=True)
    bin_dir, env = Path(sys.executable).parent, os.environ.copy()
    env["PATH"] = os.pathsep.join([str(bin_dir), env.get("PATH", "")])
    uri = env.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{ROOT / 'mlflow.db'}")
    mlflow, prefect = (f"http://127.0.0.1:{port}" for port in free_ports(2))
    failures, checked, t0 = [], 0, time.time()
    with contextlib.ExitStack() as stack:
        try:  # both servers start at once
            port = mlflow.rsplit(":", 1)[1]
            cmd = [str(bin_dir / "mlflow"), "ui", "--host", "127.0.0.1", "--port", port, "--backend-store-uri", uri, "--workers", "1"]
            ml_proc = spawn(stack, cmd, logs / "mlflow.log", env)
            cmd = [str(bin_dir / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", prefect.rsplit(":", 1)[1]]
            pf_env = env | {"PREFECT_UI_API_URL": f"{prefect}/api"}  # the UI would call port 4200 otherwise
            pf_proc = spawn(stack, cmd, logs / "prefect.log", pf_env)
            wait_until(lambda: http(f"{mlflow}/health", raw=True), ml_proc, "mlflow ui", logs / "mlflow.log")
            wait_until(lambda: http(f"{prefect}/api/health", raw=True), pf_proc, "prefect server", logs / "prefect.log")
            profile = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ui-check-")))  # a fresh browser profile
            browser = Browser(stack, exe, profile, logs / "chromium.log")
        except (PageError, OSError) as err:
            print(f"FAIL {err}", file=sys.stderr)
            return 1
        pages = Pages(mlflow, prefect, args, env, logs)
        for name in (p for p in PAGES if p not in args.skip):
            checked, shot = checked + 1, args.out / f"{name}.png"
            shot.unlink(missing_ok=True)  # no screenshot left from an earlier check
            try:
                page = getattr(pages, name)()
                lacking = browser.check(page, shot)
                print(f"screenshot {shot.relative_to(ROOT) if shot.is_relative_to(ROOT) else shot}", flush=True)
            except Exception as err:  # noqa: BLE001 - one line per failed page, whatever failed
                failures.append(f"{name}: {err}" if isinstance(err, PageError) else f"{name}: {type(err).__name__}: {err}")
                continue
            if lacking:
                failures.append(f"{name}: {page.url}: page lacks {', '.join(map(repr, lacking))}")
    for line in failures:
        print(f"FAIL {line}", file=sys.stderr)
    print(f"ui-check: {checked - len(failures)} of {checked} pages ok in {time.time() - t0:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the servers and the browser are stopped by then
        sys.exit("ui-check: interrupted")
