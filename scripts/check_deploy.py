"""Validates the files under deploy/ (run by the `deploy_files_are_valid` test).

* Kubernetes manifests: checked against the Kubernetes API schemas bundled in
  `kubernetes-validate` (strict: unknown fields are errors), and against each
  other: Services and the ServiceMonitor select existing pods and ports, probes
  name existing ports, the kustomization lists every manifest, pods wait longer
  than the configured drain grace.
* ECS task definitions: checked against botocore's model of
  RegisterTaskDefinition (the `aws ecs register-task-definition
  --cli-input-json` input), and stopTimeout against the drain grace;
  scheduled tasks (`ecs/schedules/`) against EventBridge's PutTargets.
* Grafana dashboard: JSON with a Prometheus query in every panel.

With `--emit-config DIR`, writes the ConfigMap's tributary.toml and
registry.toml to DIR/configmap.toml and DIR/registry.toml so that the test can
load them with Tributary's own parser.
Exits 1 and prints every problem when something is wrong.
"""

import argparse
import json
import pathlib
import sys
import tomllib

import botocore.session
import kubernetes_validate
import yaml
from botocore.validate import ParamValidator

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUBERNETES_VERSION = "1.31.0"
problems = []


def problem(where, message):
    problems.append(f"{where.relative_to(ROOT)}: {message}")


def check_kubernetes():
    kube = DEPLOY / "kubernetes"
    docs = []
    for path in sorted(kube.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((path, doc))
    by_kind = {}
    for path, doc in docs:
        by_kind.setdefault(doc["kind"], []).append((path, doc))
        if doc["kind"] in ("Kustomization", "ServiceMonitor"):
            continue  # not core Kubernetes kinds; checked by hand below
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            problem(path, f"{doc['kind']} {doc['metadata'].get('name')}: {e.message} at {list(e.path)}")

    (kustomization_path, kustomization), = by_kind["Kustomization"]
    listed = set(kustomization["resources"])
    present = {p.name for p in kube.glob("*.yaml")} - {kustomization_path.name}
    for missing in sorted(present - listed):
        problem(kustomization_path, f"does not list {missing}")
    for extra in sorted(listed - present):
        problem(kustomization_path, f"lists {extra}, which does not exist")

    (configmap_path, configmap), = by_kind["ConfigMap"]
    config = tomllib.loads(configmap["data"]["tributary.toml"])
    grace_ms = config.get("service", {}).get("shutdown_grace_ms", 25000)

    deployments = by_kind["Deployment"]
    for path, deployment in deployments:
        pod = deployment["spec"]["template"]
        selector = deployment["spec"]["selector"]["matchLabels"]
        if not selector.items() <= pod["metadata"]["labels"].items():
            problem(path, "the Deployment's selector does not match its pod labels")
        spec = pod["spec"]
        if spec.get("terminationGracePeriodSeconds", 30) * 1000 <= grace_ms:
            problem(path, f"terminationGracePeriodSeconds must exceed service.shutdown_grace_ms ({grace_ms} ms)")
        for container in spec["containers"]:
            ports = {p["name"] for p in container.get("ports", [])}
            for probe in ("livenessProbe", "readinessProbe"):
                port = container.get(probe, {}).get("httpGet", {}).get("port")
                if port not in ports:
                    problem(path, f"{container['name']} {probe} uses port {port!r}, not one of {sorted(ports)}")

    services = by_kind["Service"]
    for path, service in services:
        matching = [
            d for _, d in deployments
            if service["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        if not matching:
            problem(path, f"Service {service['metadata']['name']} selects no Deployment's pods")
        for port in service["spec"]["ports"]:
            for d in matching:
                names = {p["name"] for c in d["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
                if port["targetPort"] not in names:
                    problem(path, f"targetPort {port['targetPort']!r} is not a port of {d['metadata']['name']}")

    for path, monitor in by_kind["ServiceMonitor"]:
        if monitor["apiVersion"] != "monitoring.coreos.com/v1":
            problem(path, f"unexpected apiVersion {monitor['apiVersion']}")
        wanted = monitor["spec"]["selector"]["matchLabels"]
        selected = [s for _, s in services if wanted.items() <= s["metadata"].get("labels", {}).items()]
        if {s["metadata"]["name"] for s in selected} != {
            s["metadata"]["name"] for _, s in services if "metrics" in {p["name"] for p in s["spec"]["ports"]}
        }:
            problem(path, "the ServiceMonitor must select every metrics Service")
        for endpoint in monitor["spec"]["endpoints"]:
            for s in selected:
                if endpoint["port"] not in {p["name"] for p in s["spec"]["ports"]}:
                    problem(path, f"endpoint port {endpoint['port']!r} is not a port of {s['metadata']['name']}")
    return configmap["data"]


def check_ecs():
    model = botocore.session.get_session().get_service_model("ecs")
    shape = model.operation_model("RegisterTaskDefinition").input_shape
    grace_ms = tomllib.loads((ROOT / "config" / "container.toml").read_text())["service"]["shutdown_grace_ms"]
    for path in sorted((DEPLOY / "ecs").glob("*.json")):
        task = json.loads(path.read_text())
        report = ParamValidator().validate(task, shape)
        if report.has_errors():
            problem(path, report.generate_report())
        if task.get("networkMode") != "awsvpc":
            problem(path, "networkMode must be awsvpc")
        for container in task["containerDefinitions"]:
            stop_timeout = container.get("stopTimeout", 30)
            if isinstance(stop_timeout, int) and stop_timeout * 1000 <= grace_ms:
                problem(path, f"{container['name']}: stopTimeout must exceed service.shutdown_grace_ms ({grace_ms} ms)")
            if container.get("portMappings") and "healthCheck" not in container:
                problem(path, f"{container['name']}: serves a port but has no healthCheck")

    # Scheduled tasks: `aws events put-targets --cli-input-json` inputs, whose
    # task definitions must exist here.
    events = botocore.session.get_session().get_service_model("events")
    shape = events.operation_model("PutTargets").input_shape
    families = {json.loads(p.read_text())["family"] for p in (DEPLOY / "ecs").glob("*.json")}
    for path in sorted((DEPLOY / "ecs" / "schedules").glob("*.json")):
        targets = json.loads(path.read_text())
        report = ParamValidator().validate(targets, shape)
        if report.has_errors():
            problem(path, report.generate_report())
        for target in targets["Targets"]:
            family = target["EcsParameters"]["TaskDefinitionArn"].rsplit("/", 1)[-1].split(":")[0]
            if family not in families:
                problem(path, f"task definition {family} is not in deploy/ecs")


def check_grafana():
    for path in sorted((DEPLOY / "grafana").glob("*.json")):
        dashboard = json.loads(path.read_text())
        if not dashboard.get("panels"):
            problem(path, "no panels")
        for panel in dashboard.get("panels", []):
            exprs = [t.get("expr") for t in panel.get("targets", [])]
            if not exprs or not all(exprs):
                problem(path, f"panel {panel.get('title')!r} has a target without a query")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emit-config", type=pathlib.Path)
    args = parser.parse_args()
    config = check_kubernetes()
    check_ecs()
    check_grafana()
    if args.emit_config:
        (args.emit_config / "configmap.toml").write_text(config["tributary.toml"])
        (args.emit_config / "registry.toml").write_text(config["registry.toml"])
    for p in problems:
        print(p)
    if problems:
        sys.exit(1)
    print("deploy/: every manifest, task definition and dashboard is valid")


if __name__ == "__main__":
    main()
