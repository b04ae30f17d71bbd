"""The pure parts of tools/ui_check.py: URLs, the shared-view state, the page-text check.

The check itself (`make ui-check`: two servers and headless Chromium, a minute or more) is not part
of the test run. These tests also pin what it relies on in the installed UIs, so that an MLflow or
Prefect upgrade that renames a URL parameter or route fails here rather than as an odd screenshot.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import mlflow
import prefect

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tools/ is run from the checkout, not installed
from tools import ui_check  # noqa: E402

MLFLOW_JS = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"
PREFECT_UI = Path(prefect.__file__).parent / "server" / "ui" / "assets"


def test_mlflow_url_opens_the_shared_view_in_the_model_training_view():
    url = ui_check.mlflow_url("http://127.0.0.1:5123", "experiments", "7", "runs", viewStateShareKey="zhnlp-finetune-by-model")
    route, _, query = urlsplit(url).fragment.partition("?")
    assert url.startswith("http://127.0.0.1:5123/#/")
    assert route == "/experiments/7/runs"
    assert parse_qs(query) == {"viewStateShareKey": ["zhnlp-finetune-by-model"], "workflowType": ["machine_learning"]}


def test_mlflow_url_quotes_route_parts():
    assert ui_check.mlflow_url("http://h", "models", "zhnlp tnews/v2") == "http://h/#/models/zhnlp%20tnews%2Fv2?workflowType=machine_learning"


def test_shared_view_state_groups_by_the_tag_and_keeps_filter_and_columns():
    state = ui_check.shared_view_state(ui_check.FINETUNE_FILTER, "zhnlp.model", ["tags.`zhnlp.task`", "metrics.`dev.accuracy`"])
    assert json.loads(json.dumps(state)) == state  # stored as JSON in an experiment tag
    assert state["searchFilter"] == "tags.`zhnlp.stage_kind` LIKE 'finetune%'"
    assert state["groupBy"]["groupByKeys"] == [{"mode": "tag", "groupByData": "zhnlp.model"}]
    assert state["selectedColumns"] == ["tags.`zhnlp.task`", "metrics.`dev.accuracy`"]
    assert state["columnOrder"][0] == "attributes.`Run Name`" and state["columnWidths"] == {"attributes.`Run Name`": 250}
    assert state["columnOrder"][-2:] == state["selectedColumns"]


def test_missing_lists_what_a_saved_page_text_lacks():
    text = "Runs\nGroup: char\n6\nfinetune_clue@char-tnews\n2 minutes ago\nGroup: word\n"
    assert ui_check.missing(text, ["char", "word", "finetune_clue@char-tnews"]) == []
    assert ui_check.missing(text, ["char", "finetune_clue@word-tnews", "zhnlp-tnews"]) == ["finetune_clue@word-tnews", "zhnlp-tnews"]


def test_the_installed_mlflow_ui_still_reads_what_the_check_writes():
    bundle = "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in MLFLOW_JS.glob("*.js"))
    for needle in ['"viewStateShareKey"', '"mlflow.sharedViewState."', 'get("workflowType")', '"machine_learning"',
                   '"groupBy"', '"selectedColumns"', 'e.Tag="tag"', "model-metrics"]:
        assert needle in bundle, f"MLflow UI bundle lacks {needle}"
    for key in ui_check.NO_ASSISTANT:
        assert f'key:"{key.rsplit("_v", 1)[0]}",version:{key.rsplit("_v", 1)[1]}' in bundle, key


def test_the_installed_prefect_ui_has_the_routes_the_check_opens():
    bundle = "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in PREFECT_UI.glob("*.js"))
    for route in ("flow-run/:flowRunId", "artifact/:artifactId"):
        assert route in bundle, f"Prefect UI lacks route {route}"
