"""The Helm chart, rendered by Helm's own engine (helm-python-sdk bundles its Go library), for
the default values and the real-world values files in its ci/ folder; and the plain manifest
deploy/kubernetes.yaml. Every object is validated offline against the Kubernetes schemas."""

from __future__ import annotations

import importlib.util
import json
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from exporter import cli, config
from tests.support.processes import ROOT, need

CHART = ROOT / "deploy" / "helm" / "spacelift-exporter"
CASES: dict[str, dict[str, Any]] = {
    "defaults": {},
    **{p.stem: yaml.safe_load(p.read_text()) for p in sorted((CHART / "ci").glob("*.yaml"))},
}
RELEASE, NAMESPACE = "spacelift", "monitoring"
FULLNAME = "spacelift-spacelift-exporter"  # what the chart names a release called "spacelift"
KUBE_VERSION = kubernetes_validate.latest_version()
CRDS = {"ServiceMonitor", "PrometheusRule"}  # prometheus-operator's; not in Kubernetes' schemas


def load_script(path: Path, name: str) -> ModuleType:
    """alerts/generate.py and deploy/helm/readme.py are scripts: load them from their path."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


alerts = load_script(ROOT / "alerts" / "generate.py", "alerts_generate_for_chart")
values_readme = load_script(ROOT / "deploy" / "helm" / "readme.py", "helm_values_readme")


@pytest.fixture(scope="session")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART) as c:
        yield c


@pytest.fixture(scope="session")
def rendered(chart: helm.Chart) -> dict[str, list[dict[str, Any]]]:
    """Each case rendered once per session: its objects, in template order."""
    out = {}
    for case, values in CASES.items():
        manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
        out[case] = [
            doc
            for path, text in sorted(manifests.items())
            if path.endswith(".yaml")
            for doc in yaml.safe_load_all(text)
            if doc
        ]
    return out


def objects(rendered: dict[str, list[dict[str, Any]]], case: str, kind: str) -> list[dict]:
    return [o for o in rendered[case] if o["kind"] == kind]


def one(rendered: dict[str, list[dict[str, Any]]], case: str, kind: str) -> dict[str, Any]:
    (obj,) = objects(rendered, case, kind)
    return obj


@pytest.mark.parametrize("case", CASES)
def test_lint_is_clean(case: str) -> None:
    report = helm.lint(CHART, CASES[case], strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems and not report["errors"], problems or report["errors"]


def test_every_object_is_valid_kubernetes(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for case, objs in rendered.items():
        for obj in objs:
            if obj["kind"] not in CRDS:
                kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
            assert obj["metadata"]["labels"]["app.kubernetes.io/name"] == "spacelift-exporter"
        kinds = sorted(o["kind"] for o in objs)
        assert kinds.count("Deployment") == 1, (case, kinds)


# -- Pod Security "restricted" (kubernetes.io/docs/concepts/security/pod-security-standards) ----

RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
    "projected", "secret",
}  # fmt: skip


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """What the "restricted" profile (baseline included) refuses in a pod spec."""
    bad = []
    psc = pod.get("securityContext", {})
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(host):
            bad.append(host)
    for vol in pod.get("volumes", []):
        kinds = set(vol) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            bad.append(f"volume {vol['name']}: {kinds}")
    for c in pod.get("initContainers", []) + pod["containers"]:
        sc = c.get("securityContext", {})
        name = c["name"]
        if sc.get("privileged"):
            bad.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            bad.append(f"{name}: allowPrivilegeEscalation must be false")
        if not sc.get("runAsNonRoot", psc.get("runAsNonRoot")):
            bad.append(f"{name}: runAsNonRoot must be true")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            bad.append(f"{name}: runAsUser 0")
        seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            bad.append(f"{name}: seccompProfile {seccomp}")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            bad.append(f"{name}: capabilities must drop ALL")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            bad.append(f"{name}: adds capabilities {caps['add']}")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            bad.append(f"{name}: hostPort")
        # Beyond "restricted", as the issue asks: nothing written outside the volumes.
        if sc.get("readOnlyRootFilesystem") is not True:
            bad.append(f"{name}: readOnlyRootFilesystem must be true")
    if pod.get("automountServiceAccountToken") is not False:
        bad.append("automountServiceAccountToken must be false")
    return bad


def test_restricted_pod_security_rules_themselves() -> None:
    # The checker refuses what a restricted namespace refuses (the old manifest's pod, which
    # had no seccompProfile, for one).
    old = {
        "securityContext": {"runAsNonRoot": True},
        "automountServiceAccountToken": False,
        "containers": [
            {
                "name": "exporter",
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                },
            }
        ],
    }
    assert restricted_violations(old) == ["exporter: seccompProfile None"]


@pytest.mark.parametrize("case", CASES)
def test_every_pod_is_restricted(rendered: dict[str, list[dict[str, Any]]], case: str) -> None:
    deployment = one(rendered, case, "Deployment")
    assert restricted_violations(deployment["spec"]["template"]["spec"]) == []
    # One poller, one state file writer: never two pods at once.
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    for sa in objects(rendered, case, "ServiceAccount"):
        assert sa["automountServiceAccountToken"] is False


def test_the_plain_manifest_is_valid_and_restricted() -> None:
    docs = [d for d in yaml.safe_load_all((ROOT / "deploy" / "kubernetes.yaml").read_text()) if d]
    for obj in docs:
        if obj["kind"] not in CRDS:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    assert restricted_violations(deployment["spec"]["template"]["spec"]) == []


# -- what the chart puts together ------------------------------------------------------------


def test_prometheusrule_is_the_rule_file(rendered: dict[str, list[dict[str, Any]]]) -> None:
    kps = one(rendered, "kube-prometheus-stack-values", "PrometheusRule")
    assert kps["metadata"]["labels"]["release"] == "kps"
    # The job the ServiceMonitor gives the targets is the Service's name.
    assert one(rendered, "kube-prometheus-stack-values", "Service")["metadata"]["name"] == FULLNAME
    assert kps["spec"] == alerts.render_rules(
        job_selector=f'job="{FULLNAME}"', grafana_url="https://grafana.example.com"
    )
    custom = one(rendered, "self-hosted-tls-values", "PrometheusRule")
    assert custom["spec"] == alerts.render_rules(job_selector='job=~"spacelift-exporter.*"')
    # ... and the rule file itself, with its default selector, is what the chart links to.
    shipped = yaml.safe_load((ROOT / "alerts" / "spacelift.rules.yml").read_text())
    assert shipped == alerts.render_rules()


def test_prometheusrule_passes_promtool(
    rendered: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    for case in ("kube-prometheus-stack-values", "self-hosted-tls-values"):
        path = tmp_path / f"{case}.rules.yml"
        path.write_text(yaml.safe_dump(one(rendered, case, "PrometheusRule")["spec"]))
        proc = subprocess.run([need("promtool"), "check", "rules", str(path)], capture_output=True)
        assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()


def test_dashboards_are_the_committed_json(rendered: dict[str, list[dict[str, Any]]]) -> None:
    maps = [
        cm
        for cm in objects(rendered, "kube-prometheus-stack-values", "ConfigMap")
        if cm["metadata"]["labels"].get("grafana_dashboard") == "1"
    ]
    served = {name: json.loads(text) for cm in maps for name, text in cm["data"].items()}
    committed = {
        p.name: json.loads(p.read_text()) for p in (ROOT / "grafana" / "dashboards").glob("*.json")
    }
    assert len(committed) == 5 and served == committed
    assert {cm["metadata"]["annotations"]["grafana_folder"] for cm in maps} == {"Spacelift"}
    assert not [o for o in rendered["defaults"] if o["kind"] == "ConfigMap"]


def test_service_monitor_scrapes_with_tls_and_basic_auth(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    kps = one(rendered, "kube-prometheus-stack-values", "ServiceMonitor")
    assert kps["metadata"]["labels"]["release"] == "kps"
    assert kps["spec"]["endpoints"][0]["scheme"] == "http"
    tls = one(rendered, "self-hosted-tls-values", "ServiceMonitor")
    (endpoint,) = tls["spec"]["endpoints"]
    assert endpoint["scheme"] == "https" and endpoint["interval"] == "1m"
    assert endpoint["basicAuth"]["password"]["name"] == "spacelift-exporter-scrape"
    assert endpoint["tlsConfig"]["serverName"] == "spacelift-exporter.monitoring.svc"
    assert endpoint["relabelings"][0]["targetLabel"] == "cluster_name"
    probe = one(rendered, "self-hosted-tls-values", "Deployment")["spec"]["template"]["spec"]
    assert probe["containers"][0]["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"


def test_the_exporter_accepts_what_the_chart_gives_it(
    rendered: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    """The container's args, config file and CA, as the pod would see them, load cleanly."""
    for case in CASES:
        if case == "defaults":
            continue  # no account: the exporter exits 2 naming --spacelift-api-endpoint
        pod = one(rendered, case, "Deployment")["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        files = {}
        for cm in objects(rendered, case, "ConfigMap"):
            if "grafana_dashboard" not in cm["metadata"]["labels"]:
                files.update(cm["data"])
        for name, text in files.items():
            (tmp_path / name).write_text(text)
        args = [
            a.replace("/etc/spacelift-exporter/config/", f"{tmp_path}/") for a in container["args"]
        ]
        args = [a for a in args if not a.startswith("--web.config.file")]  # needs the TLS files
        parsed = cli.build_parser().parse_args(args)
        overrides = config.Overrides(
            **{k: v for k, v in vars(parsed).items() if k != "command" and v is not None}
        )
        env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
        env |= {"SPACELIFT_API_KEY_ID": "01HX", "SPACELIFT_API_KEY_SECRET": "s"}
        env |= {"STAGING_KEY_ID": "01HY", "STAGING_KEY_SECRET": "t"}
        cfg = config.load(overrides, env=env)
        assert cfg.state_file == Path("/var/lib/spacelift-exporter/state.json"), shlex.join(args)
        assert cfg.listen_address == ":9953"


def test_values_schema_catches_typos(chart: helm.Chart) -> None:
    with pytest.raises(helm.HelmValuesError, match="enabeld"):
        chart.render({"serviceMonitor": {"enabeld": True}}, name=RELEASE, namespace=NAMESPACE)
    with pytest.raises(helm.HelmValuesError, match="port"):
        chart.render({"service": {"port": "9953"}}, name=RELEASE, namespace=NAMESPACE)


def test_the_values_table_is_current() -> None:
    assert values_readme.main(["--check"]) == 0, "run python deploy/helm/readme.py"
    values_text = (CHART / "values.yaml").read_text()
    documented = {key.split(".")[0] for key, _ in values_readme.documented(values_text)}
    assert documented == set(yaml.safe_load(values_text))  # every top-level value documented
