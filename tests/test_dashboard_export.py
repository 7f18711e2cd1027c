"""The dashboards' grafana.com export form (grafana/export/) and the provisioning form
(grafana/dashboards/) are one dashboard: same source, same panels and queries."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from grafana import generate
from grafana.dashboards_src import DASHBOARDS

ROOT = Path(__file__).resolve().parents[1]


def load(form: str, uid: str) -> dict:
    return json.loads((ROOT / "grafana" / form / f"{uid}.json").read_text())


@pytest.mark.parametrize("uid", DASHBOARDS)
def test_both_forms_are_the_same_dashboard(uid: str) -> None:
    exported, provisioned = load("export", uid), load("dashboards", uid)
    assert generate.provisioning_form(exported) == provisioned
    assert exported["uid"] == provisioned["uid"] == uid


@pytest.mark.parametrize("uid", DASHBOARDS)
def test_export_form_imports_without_edits(uid: str) -> None:
    exported = load("export", uid)
    text = json.dumps(exported)
    # Every ${DS_*} the importer must fill is declared as an input, and only those.
    declared = {i["name"] for i in exported["__inputs"]}
    assert set(re.findall(r"\$\{(DS_[A-Z_]+)\}", text)) == declared == {"DS_PROMETHEUS"}
    assert exported["__inputs"][0]["pluginId"] == "prometheus"
    # Grafana's importer replaces ${DS_PROMETHEUS} by the data source the user picks: it then
    # becomes the default of the datasource variable, and every panel follows that variable.
    imported = json.loads(text.replace("${DS_PROMETHEUS}", "picked-uid"))
    (var,) = [v for v in imported["templating"]["list"] if v["type"] == "datasource"]
    assert var["current"]["value"] == "picked-uid"
    refs = re.findall(r'"datasource": \{[^}]*"uid": "([^"]+)"', json.dumps(imported))
    assert refs and set(refs) == {"${datasource}"}
    # __requires names Grafana and every panel plugin the dashboard uses.
    required = {(r["type"], r["id"]) for r in exported["__requires"]}
    panels = {p["type"] for p in generate._panels(exported["panels"])} - {"row"}
    assert required == {("grafana", "grafana"), ("datasource", "prometheus")} | {
        ("panel", p) for p in panels
    }
    assert exported["id"] is None
