"""Validates the files under deploy/ (run by the `deploy_files_are_valid` test).

* Kubernetes manifests: checked against the Kubernetes API schemas bundled in
  `kubernetes-validate` (strict: unknown fields are errors), and against each
  other: Services and the ServiceMonitor select existing pods and ports, probes
  name existing ports, the kustomization lists every manifest, pods wait longer
  than the configured drain grace.
* ECS task definitions: checked against botocore's model of
  RegisterTaskDefinition (the `aws ecs register-task-definition
  --cli-input-json` input); `dependsOn` names containers that can be waited
  for; `secrets` are ARNs of Secrets Manager secrets or SSM parameters,
  fetched by an execution role; scheduled tasks (`ecs/schedules/`) against
  EventBridge's PutTargets; rules and targets started by Tributary's events
  (`ecs/triggers/`) against PutRule and PutTargets, their patterns and input
  paths against the events the EventBridge sink sends; services (`ecs/services/`) against CreateService,
  with load balancers on a port of their task definition's container.
* Every `tributary` container, on either platform, against the configuration
  it runs with (the file `--config` names: the ConfigMap's, the image's as
  deploy/Dockerfile copies it, or one written at start by a container it waits
  for; then its `TRIBUTARY_<SECTION>__<KEY>` variables, applied as
  config/src/load.rs does): every such variable names a key config/README.md
  documents; the ports it maps, probes and has scraped are the one it listens
  on (`service.listen_addr`, or `registry.listen_addr` for `registry serve`);
  it is given longer than `service.shutdown_grace_ms` to stop; a registry's
  store is on S3 and, where it is the ConfigMap's store, has its name.
* Grafana dashboard: JSON with a Prometheus query in every panel.

With `--emit-config DIR`, writes the ConfigMap's tributary.toml and
registry.toml to DIR/configmap.toml and DIR/registry.toml so that the test can
load them with Tributary's own parser.
Exits 1 and prints every problem when something is wrong.
"""

import argparse
import json
import math
import pathlib
import re
import sys
import tomllib

import botocore.session
import kubernetes_validate
import yaml
from botocore.validate import ParamValidator

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUBERNETES_VERSION = "1.31.0"
ENV_PREFIX = "TRIBUTARY_"
# `tributary probe --addr`'s default (tributary/src/main.rs).
PROBE_DEFAULT_ADDR = "127.0.0.1:9500"
# Sections config/README.md documents by reference: `[registry.s3]` has "the
# same keys" as `[lake.s3]` (both are `S3Config`).
SAME_KEYS = {"registry.s3": "lake.s3"}
problems = []


def problem(where, message):
    problems.append(f"{where.relative_to(ROOT)}: {message}")


def documented_keys():
    """Every key config/README.md documents, as {"lake.s3.region": (default, meaning)}."""
    keys, section = {}, None
    for line in (ROOT / "config" / "README.md").read_text().splitlines():
        heading = re.match(r"#+ `\[\[?([a-z0-9_.]+)\]\]?`", line)
        if heading:
            section = heading.group(1)
            continue
        row = re.match(r"\| `([a-z0-9_]+)` \| ([^|]*) \| (.*) \|$", line)
        if section and row:
            keys[f"{section}.{row.group(1)}"] = (row.group(2).strip(), row.group(3).strip())
    for alias, original in SAME_KEYS.items():
        for key, value in list(keys.items()):
            if key.startswith(original + "."):
                keys[alias + key[len(original):]] = value
    return keys


KEYS = documented_keys()


def documented(key):
    """Whether `key` is a documented key, or an entry of a documented table-valued key."""
    if key in KEYS:
        return True
    return any(
        key.startswith(k + ".") and (default == "`{}`" or meaning.startswith("table of"))
        for k, (default, meaning) in KEYS.items()
    )


def default(key):
    """The documented default of `key`, as TOML would read it."""
    text = KEYS[key][0].strip("`")
    return int(text) if text.isdigit() else text


def image_files():
    """The configuration files deploy/Dockerfile copies into the runtime image: {image path: text}."""
    lines = (DEPLOY / "Dockerfile").read_text().splitlines()
    runtime = max(i for i, line in enumerate(lines) if line.startswith("FROM "))
    files = {}
    for line in lines[runtime:]:
        copied = re.match(r"COPY (?!--)(\S+) (\S+)$", line)
        if copied:
            files[copied.group(2)] = (ROOT / copied.group(1)).read_text()
    return files


def scalar(value):
    """An override's value as config/src/load.rs reads it: a boolean or number when it reads as one."""
    if value in ("true", "false"):
        return value == "true"
    try:
        return int(value)
    except ValueError:
        pass
    try:
        number = float(value)
        if math.isfinite(number):
            return number
    except ValueError:
        pass
    return value


def process_config(where, who, base, variables, registry):
    """The configuration a `tributary` container runs with: `base` (the file's
    text) after the `TRIBUTARY_<SECTION>__<KEY>` overrides among `variables`
    (name → value, None when it comes from a secret). Reports variables that
    name no documented key of the process's file."""
    config = tomllib.loads(base) if base is not None else {}
    for name, value in variables.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name[len(ENV_PREFIX):]:
            continue  # not an override (TRIBUTARY_LOG, AWS_REGION, secrets named by *_env keys)
        path = [s.lower() for s in name[len(ENV_PREFIX):].split("__")]
        key = ".".join(path)
        in_file = path[0] in ("registry", "service") if registry else path[0] != "registry"
        if not (documented(key) and in_file):
            problem(where, f"{who}: {name} sets {key}, which config/README.md does not document "
                           f"for {'the registry' if registry else 'tributary.toml'} (the process would refuse to start)")
            continue
        if key.startswith("registry.tokens."):
            problem(where, f"{who}: {name}: [[registry.tokens]] is a list, which variables cannot set; "
                           "it belongs in the file")
            continue
        if registry and key == "service.listen_addr":
            problem(where, f"{who}: {name}: the registry listens on registry.listen_addr, not service.listen_addr")
        if value is None:
            continue
        table = config
        for segment in path[:-1]:
            table = table.setdefault(segment, {})
            if not isinstance(table, dict):
                problem(where, f"{who}: {name}: {key} is inside a value that is not a table")
                break
        else:
            table[path[-1]] = value if isinstance(table.get(path[-1]), str) else scalar(value)
    return config


def config_value(config, key):
    """`key` ("registry.listen_addr") in `config`, else its documented default."""
    value = config
    for segment in key.split("."):
        if not isinstance(value, dict) or segment not in value:
            return default(key)
        value = value[segment]
    return value


def port_of(addr):
    return int(str(addr).rsplit(":", 1)[1])


def check_process(where, who, config, registry, registry_files):
    """Checks that hold on either platform; returns (listen port, shutdown grace in ms)."""
    listen_key = "registry.listen_addr" if registry else "service.listen_addr"
    port = port_of(config_value(config, listen_key))
    grace_ms = config_value(config, "service.shutdown_grace_ms")
    if registry:
        store = config_value(config, "registry.store_uri")
        name = config_value(config, "registry.name")
        if not str(store).startswith("s3://"):
            problem(where, f"{who}: registry.store_uri is {store!r}: replicas share one store, which must be on S3")
        for other_where, other in registry_files:
            other_store = config_value(other, "registry.store_uri")
            other_name = config_value(other, "registry.name")
            if other_store == store and other_name != name:
                problem(where, f"{who}: registry.name {name!r} differs from {other_name!r} in {other_where}, "
                               f"which serves the same store {store}")
    return port, grace_ms


def is_tributary(container):
    return container["image"].rsplit("/", 1)[-1].split(":")[0] == "tributary"


def config_path(where, who, command):
    if "--config" not in command[:-1]:
        problem(where, f"{who}: the command has no --config")
        return None
    return command[command.index("--config") + 1]


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
    registry_files = [(f"{configmap_path.relative_to(ROOT)} registry.toml",
                       tomllib.loads(configmap["data"]["registry.toml"]))]
    baked = image_files()

    deployments = by_kind["Deployment"]
    for path, deployment in deployments:
        pod = deployment["spec"]["template"]
        selector = deployment["spec"]["selector"]["matchLabels"]
        if not selector.items() <= pod["metadata"]["labels"].items():
            problem(path, "the Deployment's selector does not match its pod labels")
        spec = pod["spec"]
        configmap_volumes = {
            v["name"] for v in spec.get("volumes", [])
            if v.get("configMap", {}).get("name") == configmap["metadata"]["name"]
        }
        for container in spec["containers"]:
            ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
            probed = set()
            for probe in ("livenessProbe", "readinessProbe"):
                port = container.get(probe, {}).get("httpGet", {}).get("port")
                if port not in ports:
                    problem(path, f"{container['name']} {probe} uses port {port!r}, not one of {sorted(ports)}")
                else:
                    probed.add(ports[port])
            if not is_tributary(container):
                continue
            who = f"{deployment['metadata']['name']} {container['name']}"
            command = container.get("args", [])
            file = config_path(path, who, command)
            if file is None:
                continue
            mounted = [
                m for m in container.get("volumeMounts", [])
                if m["name"] in configmap_volumes and file.startswith(m["mountPath"].rstrip("/") + "/")
            ]
            if mounted:
                base = configmap["data"].get(file[len(mounted[0]["mountPath"].rstrip("/")) + 1:])
            else:
                base = baked.get(file)
            if base is None:
                problem(path, f"{who}: nothing puts {file} in the container")
                continue
            registry = command[:2] == ["registry", "serve"]
            variables = {e["name"]: e.get("value") for e in container.get("env", [])}
            config = process_config(path, who, base, variables, registry)
            port, grace_ms = check_process(path, who, config, registry, registry_files)
            if spec.get("terminationGracePeriodSeconds", 30) * 1000 <= grace_ms:
                problem(path, f"{who}: terminationGracePeriodSeconds must exceed service.shutdown_grace_ms ({grace_ms} ms)")
            if probed and probed != {port}:
                problem(path, f"{who}: probes port {sorted(probed)}, but the process listens on {port}")
            scraped = pod["metadata"].get("annotations", {}).get("prometheus.io/port")
            if scraped is not None and int(scraped) != port:
                problem(path, f"{who}: prometheus.io/port is {scraped}, but the process listens on {port}")

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
    return configmap["data"], registry_files


def check_ecs_process(path, container, containers, baked, registry_files):
    """A `tributary` container of a task definition against its configuration."""
    who = container["name"]
    command = container.get("command", [])
    file = config_path(path, who, command)
    if file is None:
        return
    mounts = [m for m in container.get("mountPoints", []) if file.startswith(m["containerPath"].rstrip("/") + "/")]
    if mounts:
        # Written at start: by a container this one waits for (SUCCESS) that
        # mounts the same volume. What it writes is not known here; only the
        # container's variables are checked, over the documented defaults.
        volume = mounts[0]["sourceVolume"]
        writers = [
            d["containerName"] for d in container.get("dependsOn", [])
            if d["condition"] == "SUCCESS" and any(
                m["sourceVolume"] == volume and not m.get("readOnly", False)
                for m in containers.get(d["containerName"], {}).get("mountPoints", [])
            )
        ]
        if not writers:
            problem(path, f"{who}: {file} is on volume {volume}, which no container it waits for (dependsOn SUCCESS) writes")
        base = ""
    else:
        base = baked.get(file)
        if base is None:
            problem(path, f"{who}: nothing puts {file} in the container (deploy/Dockerfile copies {sorted(baked)})")
            return
    registry = command[:2] == ["registry", "serve"]
    variables = {e["name"]: e["value"] for e in container.get("environment", [])}
    variables.update({s["name"]: None for s in container.get("secrets", [])})
    config = process_config(path, who, base, variables, registry)
    port, grace_ms = check_process(path, who, config, registry, registry_files)

    stop_timeout = container.get("stopTimeout", 30)
    if isinstance(stop_timeout, int) and stop_timeout * 1000 <= grace_ms:
        problem(path, f"{who}: stopTimeout must exceed service.shutdown_grace_ms ({grace_ms} ms)")
    mapped = {p.get("containerPort") for p in container.get("portMappings", [])}
    if mapped and mapped != {port}:
        problem(path, f"{who}: maps ports {sorted(mapped)}, but the process listens on {port} only")
    check = container.get("healthCheck", {}).get("command", [])
    if "probe" in check:
        addr = check[check.index("--addr") + 1] if "--addr" in check[:-1] else PROBE_DEFAULT_ADDR
        if port_of(addr) != port:
            problem(path, f"{who}: the healthCheck probes {addr}, but the process listens on port {port}")
    scraped = container.get("dockerLabels", {}).get("PROMETHEUS_EXPORTER_PORT")
    if scraped is not None and int(scraped) != port:
        problem(path, f"{who}: PROMETHEUS_EXPORTER_PORT is {scraped}, but the process listens on {port}")


def check_ecs(registry_files):
    ecs = botocore.session.get_session().get_service_model("ecs")
    shape = ecs.operation_model("RegisterTaskDefinition").input_shape
    baked = image_files()
    tasks = {}
    for path in sorted((DEPLOY / "ecs").glob("*.json")):
        task = json.loads(path.read_text())
        tasks[task["family"]] = task
        report = ParamValidator().validate(task, shape)
        if report.has_errors():
            problem(path, report.generate_report())
        if task.get("networkMode") != "awsvpc":
            problem(path, "networkMode must be awsvpc")
        volumes = {v["name"] for v in task.get("volumes", [])}
        containers = {c["name"]: c for c in task["containerDefinitions"]}
        for container in task["containerDefinitions"]:
            who = container["name"]
            if container.get("portMappings") and "healthCheck" not in container:
                problem(path, f"{who}: serves a port but has no healthCheck")
            for mount in container.get("mountPoints", []):
                if mount["sourceVolume"] not in volumes:
                    problem(path, f"{who}: mounts volume {mount['sourceVolume']!r}, which the task does not define")
            for dependency in container.get("dependsOn", []):
                other = containers.get(dependency["containerName"])
                if other is None:
                    problem(path, f"{who}: dependsOn {dependency['containerName']!r}, which is not in the task")
                elif dependency["condition"] in ("COMPLETE", "SUCCESS") and other.get("essential", True):
                    problem(path, f"{who}: waits for {other['name']} to exit ({dependency['condition']}), "
                                  "so that container must be essential: false")
            for secret in container.get("secrets", []):
                if not re.match(r"arn:aws[a-z-]*:(secretsmanager|ssm):", secret["valueFrom"]):
                    problem(path, f"{who}: secret {secret['name']}: valueFrom must be the ARN of a Secrets Manager "
                                  "secret or an SSM parameter")
                if "executionRoleArn" not in task:
                    problem(path, f"{who}: secret {secret['name']} needs an executionRoleArn (the role that fetches it)")
            if is_tributary(container):
                check_ecs_process(path, container, containers, baked, registry_files)

    # Scheduled tasks: `aws events put-targets --cli-input-json` inputs, whose
    # task definitions must exist here.
    events = botocore.session.get_session().get_service_model("events")
    shape = events.operation_model("PutTargets").input_shape
    for path in sorted((DEPLOY / "ecs" / "schedules").glob("*.json")):
        targets = json.loads(path.read_text())
        report = ParamValidator().validate(targets, shape)
        if report.has_errors():
            problem(path, report.generate_report())
        for target in targets["Targets"]:
            family = target["EcsParameters"]["TaskDefinitionArn"].rsplit("/", 1)[-1].split(":")[0]
            if family not in tasks:
                problem(path, f"task definition {family} is not in deploy/ecs")

    check_triggers(events, tasks)

    # Services: `aws ecs create-service --cli-input-json` inputs, whose task
    # definitions must exist here, with the container ports their load
    # balancers send to.
    shape = ecs.operation_model("CreateService").input_shape
    for path in sorted((DEPLOY / "ecs" / "services").glob("*.json")):
        service = json.loads(path.read_text())
        report = ParamValidator().validate(service, shape)
        if report.has_errors():
            problem(path, report.generate_report())
        family = service.get("taskDefinition", "").rsplit("/", 1)[-1].split(":")[0]
        task = tasks.get(family)
        if task is None:
            problem(path, f"task definition {family} is not in deploy/ecs")
            continue
        containers = {c["name"]: c for c in task["containerDefinitions"]}
        for balancer in service.get("loadBalancers", []):
            container = containers.get(balancer.get("containerName"))
            if container is None:
                problem(path, f"load balancer: {family} has no container {balancer.get('containerName')!r}")
            elif balancer.get("containerPort") not in {p.get("containerPort") for p in container.get("portMappings", [])}:
                problem(path, f"load balancer: {container['name']} maps no port {balancer.get('containerPort')}")


# The fields of a data availability event (compactor/src/events/mod.rs,
# `Event`), and the detail types and default source of the EventBridge sink.
EVENT_FIELDS = {"id", "kind", "table", "version", "operation", "request_id", "partitions",
                "watermarks", "committed_at", "completed"}
EVENT_KINDS = {"commit", "partition_complete"}
EVENT_SOURCE = "tributary"


def check_triggers(events, tasks):
    """Rules and targets that start a task on Tributary's events
    (`ecs/triggers/`): `aws events put-rule` / `put-targets --cli-input-json`
    inputs. A rule's pattern matches what the EventBridge sink sends; a
    target's input paths name fields events have, and its template is JSON
    once they are filled in."""
    directory = DEPLOY / "ecs" / "triggers"
    rules = {}
    for path in sorted(directory.glob("*-rule.json")):
        rule = json.loads(path.read_text())
        report = ParamValidator().validate(rule, events.operation_model("PutRule").input_shape)
        if report.has_errors():
            problem(path, report.generate_report())
        rules[(rule.get("EventBusName"), rule.get("Name"))] = rule
        try:
            pattern = json.loads(rule.get("EventPattern", ""))
        except json.JSONDecodeError as e:
            problem(path, f"EventPattern is not JSON: {e}")
            continue
        if pattern.get("source") != [EVENT_SOURCE]:
            problem(path, f"the pattern's source must be [{EVENT_SOURCE!r}], what the sink sends by default")
        unknown = set(pattern.get("detail-type", [])) - EVENT_KINDS
        if unknown:
            problem(path, f"no event has detail-type {sorted(unknown)}: the kinds are {sorted(EVENT_KINDS)}")
        unknown = set(pattern.get("detail", {})) - EVENT_FIELDS
        if unknown:
            problem(path, f"the pattern matches detail fields events do not have: {sorted(unknown)}")
    for path in sorted(directory.glob("*-targets.json")):
        targets = json.loads(path.read_text())
        report = ParamValidator().validate(targets, events.operation_model("PutTargets").input_shape)
        if report.has_errors():
            problem(path, report.generate_report())
        if (targets.get("EventBusName"), targets.get("Rule")) not in rules:
            problem(path, f"no rule {targets.get('Rule')} on bus {targets.get('EventBusName')} in {directory}")
        for target in targets["Targets"]:
            transformer = target.get("InputTransformer", {})
            for name, json_path in transformer.get("InputPathsMap", {}).items():
                parts = json_path.split(".")
                if parts[:2] != ["$", "detail"] or len(parts) < 3 or parts[2] not in EVENT_FIELDS:
                    problem(path, f"input path {name} = {json_path} names no field of an event")
            template = transformer.get("InputTemplate")
            if template is not None:
                filled = re.sub(r"<[A-Za-z0-9_.-]+>", '"x"', template).replace('""x""', '"x"')
                try:
                    overrides = json.loads(filled)
                except json.JSONDecodeError as e:
                    problem(path, f"InputTemplate is not JSON once filled in: {e}")
                    continue
                if "EcsParameters" in target and "containerOverrides" not in overrides:
                    problem(path, "an ECS target's input is RunTask overrides: containerOverrides is missing")


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
    config, registry_files = check_kubernetes()
    check_ecs(registry_files)
    check_grafana()
    if args.emit_config:
        (args.emit_config / "configmap.toml").write_text(config["tributary.toml"])
        (args.emit_config / "registry.toml").write_text(config["registry.toml"])
    for p in problems:
        print(p)
    if problems:
        sys.exit(1)
    print("deploy/: every manifest, task definition, service and dashboard is valid")


if __name__ == "__main__":
    main()
