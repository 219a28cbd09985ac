"""Tests of charts/tollgate with real Helm v4 (helm-python-sdk): lint, schema, and the objects
rendered with the default values and with every option on. Run by `make chart-test`."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import helm_python as helm
import pytest
import yaml

import render

ROOT = render.ROOT
CHART = render.CHART
NS = render.NAMESPACE
EXCLUDED = {"kube-system", "kube-public", "kube-node-lease", NS}

# Every option on (the bundled Redis; an external one is EXTERNAL_REDIS below).
ALL_ON = {
    "image": {"repository": "registry.example.com/tollgate", "tag": "0.1.0-rc1", "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "regcred"}],
    "controller": {
        "replicas": 3,
        "logLevel": "debug",
        "logFormat": "text",
        "extraTlsSans": ["tollgate.example.com", "10.0.0.7"],
        "podDisruptionBudget": {"enabled": True, "maxUnavailable": 1, "minAvailable": 2},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "infra", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {}},
        "priorityClassName": "system-cluster-critical",
        "podLabels": {"team": "platform"},
        "podAnnotations": {"prometheus.io/scrape": "true"},
    },
    "injection": {
        "nativeSidecar": True,
        "resources": {"cpu": "100m", "memory": "96Mi", "cpuLimit": "1", "memoryLimit": "256Mi"},
        "excludedNamespaces": ["monitoring", "kube-system"],
    },
    "webhook": {
        "failurePolicy": "Ignore",
        "timeoutSeconds": 10,
        "url": "https://127.0.0.1:9443/mutate",
        "certManager": {"enabled": True, "duration": "720h"},
    },
    "networkPolicy": {
        "namespaces": ["default", "shop"],
        "proxyFrom": [{"namespaceSelector": {"matchLabels": {"team": "shop"}}}],
        "metricsFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
    },
    "redis": {"bundled": {"enabled": True, "persistence": {"enabled": True, "size": "5Gi", "storageClass": "fast"}}},
    "tokenRoles": {"enabled": True, "aggregateToBuiltInRoles": True},
    "serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "prometheus"}},
    "podMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "prometheus"}},
}

EXTERNAL_REDIS = {
    "redis": {
        "url": "rediss://redis.example.com:6380",
        "username": "tollgate",
        "passwordSecret": {"name": "redis-auth", "key": "password"},
    },
    "injection": {"redisSecret": "tollgate-redis:url"},
}

# EXTERNAL_REDIS with a private CA and client certificates (tls-auth-clients yes).
EXTERNAL_REDIS_TLS = {
    "redis": {
        **EXTERNAL_REDIS["redis"],
        "tls": {"caSecret": {"name": "redis-ca", "key": "ca.pem"}, "clientSecret": "tollgate-redis-client"},
    },
    "injection": {
        **EXTERNAL_REDIS["injection"],
        "redisCaConfigMap": "redis-ca:ca.pem",
        "redisClientSecret": "redis-client",
    },
}

# The default metricsNamespaceSelector's peer: Prometheus's namespace.
PROMETHEUS = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}

WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection", "escalate", "bind", "impersonate", "*"}


def objects(values: dict | None = None) -> list[dict]:
    return render.render(values)


def find(objs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objs: list[dict], kind: str, name: str | None = None) -> dict:
    found = find(objs, kind, name)
    assert len(found) == 1, f"{kind} {name}: {[o['metadata']['name'] for o in found]}"
    return found[0]


def env(deployment: dict) -> dict[str, dict]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e for e in container["env"]}


def source(path: str) -> str:
    return (ROOT / path).read_text()


# === lint and schema ===


@pytest.mark.parametrize(
    "values",
    [None, ALL_ON, EXTERNAL_REDIS, EXTERNAL_REDIS_TLS],
    ids=["defaults", "all-on", "external-redis", "external-redis-tls"],
)
def test_lint_is_clean(values):
    report = helm.lint(CHART, values, strict=True, namespace=NS, kube_version="v1.28.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"webhook": {"failurePolicy": "Maybe"}}, "at '/webhook/failurePolicy'"),
        ({"webhook": {"timeoutSeconds": 60}}, "at '/webhook/timeoutSeconds'"),
        ({"webhook": {"url": "http://127.0.0.1:9443/mutate"}}, "at '/webhook/url'"),
        ({"controller": {"replicas": 0}}, "at '/controller/replicas'"),
        ({"controler": {"replicas": 2}}, "'controler' not allowed"),
        ({"injection": {"resources": {"memory": "64m"}}}, "at '/injection/resources/memory'"),
        ({"injection": {"resources": {"cpu": "lots"}}}, "at '/injection/resources/cpu'"),
        ({"injection": {"excludedNamespaces": ["Bad_Name"]}}, "at '/injection/excludedNamespaces/0'"),
        ({"redis": {"url": "redis://:hunter2@redis:6379"}}, "at '/redis/url'"),
        ({"redis": {"url": "http://redis:6379"}}, "at '/redis/url'"),
        ({"redis": {"passwordSecret": {"name": "redis-auth"}}}, "'key' required"),
        ({"image": {"pullPolicy": "Sometimes"}}, "at '/image/pullPolicy'"),
        ({"networkPolicy": {"proxyFrom": [{"namespaceSelectr": {}}]}}, "at '/networkPolicy/proxyFrom/0'"),
        ({"injection": {"sidecarEnv": {"max_connections": "5"}}}, "'max_connections' does not match pattern"),
        ({"redis": {"tls": {"caSecret": {"name": "redis-ca"}}}}, "'key' required"),
        ({"redis": {"tls": {"clientSecret": "Bad_Name"}}}, "at '/redis/tls/clientSecret'"),
        ({"redis": {"tls": {"ca": "x"}}}, "'ca' not allowed"),
        ({"injection": {"redisCaConfigMap": "ca/x"}}, "at '/injection/redisCaConfigMap'"),
        ({"injection": {"redisClientSecret": "a:b"}}, "at '/injection/redisClientSecret'"),
    ],
)
def test_the_schema_refuses_bad_values_naming_them(bad, message):
    with helm.Chart.load(CHART) as chart:
        with pytest.raises(helm.HelmError) as refused:
            chart.validate_schema(chart.merge_values(bad))
    assert message in str(refused.value)


def test_the_schema_accepts_the_defaults_and_every_option():
    with helm.Chart.load(CHART) as chart:
        for values in ({}, ALL_ON, EXTERNAL_REDIS):
            chart.validate_schema(chart.merge_values(values))


def test_every_value_has_a_comment():
    """values.yaml: each key has a comment line above it, or opens a block whose keys do. The
    contents of Kubernetes objects (`resources`, security contexts, label selectors) are
    described by their parent's comment."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    parents: list[tuple[int, str]] = []  # (indent, key) of the enclosing blocks
    for number, line in enumerate(lines):
        key = re.match(r"^(\s*)([A-Za-z][A-Za-z0-9]*):", line)
        if not key:
            continue
        indent = len(key.group(1))
        parents = [(i, k) for i, k in parents if i < indent]
        above = lines[number - 1].strip() if number else ""
        below = lines[number + 1] if number + 1 < len(lines) else ""
        opens_block = line.rstrip().endswith(":") and len(below) - len(below.lstrip()) > indent
        kubernetes_objects = {"resources", "podSecurityContext", "securityContext", "metricsNamespaceSelector"}
        in_resources = any(k in kubernetes_objects for _, k in parents)
        assert above.startswith("#") or opens_block or in_resources, \
            f"values.yaml:{number + 1}: {line.strip()} has no comment"
        parents.append((indent, key.group(2)))


@pytest.mark.parametrize(
    "values, message",
    [
        ({"redis": {"url": "redis://r:6379", "bundled": {"enabled": True}}}, "set either redis.url"),
        ({"redis": {"url": "rediss://r:6380", "passwordSecret": {"name": "a", "key": "b"}}}, "injection.redisSecret"),
    ],
)
def test_contradictions_fail_with_a_message(values, message):
    with pytest.raises(helm.HelmError) as failed:
        objects(values)
    assert message in str(failed.value)


# === what gets installed ===


def test_defaults_render_the_issue_s_contents():
    objs = objects()
    kinds = sorted({o["kind"] for o in objs})
    assert kinds == sorted({
        "APIService", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "Deployment", "MutatingWebhookConfiguration",
        "NetworkPolicy", "PodDisruptionBudget", "Role", "RoleBinding", "Service", "ServiceAccount",
    })
    # No bundled Redis and no cert-manager objects unless asked for.
    assert not find(objs, "Deployment", "tollgate-redis")
    assert not [o for o in objs if o["apiVersion"].startswith("cert-manager.io/")]
    names = {o["metadata"]["name"] for o in find(objs, "ClusterRole")}
    assert names == {"tollgate-controller", "tollgate-token-admin", "tollgate-token-viewer"}


def test_every_option_on_renders_everything():
    objs = objects(ALL_ON)
    assert one(objs, "Deployment", "tollgate-redis")
    assert one(objs, "Service", "tollgate-redis")
    assert one(objs, "NetworkPolicy", "tollgate-redis")
    assert {o["kind"] for o in objs if o["apiVersion"] == "cert-manager.io/v1"} == {"Issuer", "Certificate"}
    cert = one(objs, "Certificate", "tollgate-webhook")
    assert cert["spec"]["dnsNames"] == [
        "tollgate-controller.tollgate-system.svc",
        "tollgate-controller.tollgate-system.svc.cluster.local",
        "tollgate.example.com",
    ]
    assert cert["spec"]["ipAddresses"] == ["10.0.0.7"]
    assert {o["metadata"]["namespace"] for o in find(objs, "NetworkPolicy") if o["metadata"]["name"] == "tollgate-injected-pods"} == {"default", "shop"}
    admin = one(objs, "ClusterRole", "tollgate-token-admin")
    assert admin["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-admin"] == "true"


def test_the_controller_deployment():
    deployment = one(objects(), "Deployment", "tollgate-controller")
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "tollgate-controller"
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = pod["containers"][0]
    assert container["image"] == "tollgate:0.1.0"
    assert container["args"] == ["controller"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"stream": 8090, "admin": 8444, "webhook": 9443, "metrics": 9090}

    variables = env(deployment)
    assert variables["TOLLGATE_SIDECAR_IMAGE"]["value"] == container["image"], "sidecars run the controller's image"
    assert variables["TOLLGATE_SIDECAR_CONTROLLER_URL"]["value"] == "https://tollgate-controller.tollgate-system.svc:8090"
    assert "tollgate-controller.tollgate-system.svc" in variables["TOLLGATE_TLS_SANS"]["value"].split(",")
    assert variables["TOLLGATE_WEBHOOK_LISTEN"]["value"] == "0.0.0.0:9443"
    assert variables["TOLLGATE_WEBHOOK_CONFIGURATION"]["value"] == "tollgate"
    assert set(variables["TOLLGATE_INJECTION_EXCLUDED_NAMESPACES"]["value"].split(",")) == EXCLUDED
    assert variables["TOLLGATE_CA_SECRET"]["value"] == "tollgate-system/tollgate-ca"
    assert "TOLLGATE_REDIS_URL" not in variables

    pdb = one(objects(), "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1 and "minAvailable" not in pdb["spec"]
    assert pdb["spec"]["selector"]["matchLabels"] == spec["selector"]["matchLabels"]


def test_sidecar_env_reaches_the_controller_as_flags_the_injector_checks():
    deployment = one(
        objects({"injection": {"sidecarEnv": {"TOLLGATE_MAX_CONNECTIONS": 5000, "TOLLGATE_LOG": "info,tollgate=debug"}}}),
        "Deployment",
        "tollgate-controller",
    )
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args == [
        "controller",
        "--sidecar-env", "TOLLGATE_LOG=info,tollgate=debug",
        "--sidecar-env", "TOLLGATE_MAX_CONNECTIONS=5000",
    ]
    # The names the chart may pass are the injector's list (crates/inject/src/args.rs).
    tunables = set(re.findall(r'"(TOLLGATE_[A-Z0-9_]+)",', source("crates/inject/src/args.rs").split("TUNABLE_SIDECAR_ENV")[1].split("];")[0]))
    assert {"TOLLGATE_MAX_CONNECTIONS", "TOLLGATE_LOG"} <= tunables
    assert "TOLLGATE_ADMIN_LISTEN" not in tunables and "TOLLGATE_TRUSTED_IPS" not in tunables


def test_every_environment_variable_is_a_real_flag():
    """The controller's flags are read from the environment: each variable the chart sets must
    be one the binary reads, or the setting is silently lost."""
    declared = set()
    for path in [
        "crates/controller/src/config.rs",
        "crates/inject/src/args.rs",
        "crates/inject/src/webhook.rs",
        "crates/serve/src/runtime.rs",  # the Redis flags both processes share
    ]:
        declared |= set(re.findall(r'env = "([A-Z0-9_]+)"', source(path)))
    read_elsewhere = {"TOLLGATE_LOG", "TOLLGATE_LOG_FORMAT"}  # src/main.rs, for logging
    assert all(f'"{name}"' in source("src/main.rs") for name in read_elsewhere)
    substitution_only = {"TOLLGATE_REDIS_PASSWORD"}  # $(TOLLGATE_REDIS_PASSWORD) in the URL
    for values in (None, ALL_ON, EXTERNAL_REDIS, EXTERNAL_REDIS_TLS):
        for deployment in find(objects(values), "Deployment", "tollgate-controller"):
            for name in env(deployment):
                assert name in declared | read_elsewhere | substitution_only | {"POD_NAME", "POD_NAMESPACE"}, name


def test_redis_settings_reach_the_controller_and_the_sidecars():
    bundled = env(one(objects({"redis": {"bundled": {"enabled": True}}}), "Deployment", "tollgate-controller"))
    assert bundled["TOLLGATE_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "tollgate-redis", "key": "password"}
    assert bundled["TOLLGATE_REDIS_URL"]["value"] == "redis://:$(TOLLGATE_REDIS_PASSWORD)@tollgate-redis.tollgate-system.svc:6379"
    names = list(bundled)
    assert names.index("TOLLGATE_REDIS_PASSWORD") < names.index("TOLLGATE_REDIS_URL"), "substitution needs order"
    # Sidecars read the URL, password included, from a Secret of their own namespace.
    assert bundled["TOLLGATE_SIDECAR_REDIS_SECRET"]["value"] == "tollgate-redis-url:url"
    assert "TOLLGATE_SIDECAR_REDIS_URL" not in bundled

    external = env(one(objects(EXTERNAL_REDIS), "Deployment", "tollgate-controller"))
    assert external["TOLLGATE_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "redis-auth", "key": "password"}
    assert external["TOLLGATE_REDIS_URL"]["value"] == "rediss://tollgate:$(TOLLGATE_REDIS_PASSWORD)@redis.example.com:6380"
    assert external["TOLLGATE_SIDECAR_REDIS_SECRET"]["value"] == "tollgate-redis:url"
    assert "TOLLGATE_SIDECAR_REDIS_URL" not in external
    names = list(external)
    assert names.index("TOLLGATE_REDIS_PASSWORD") < names.index("TOLLGATE_REDIS_URL"), "substitution needs order"



def test_redis_tls_files_reach_the_controller_and_the_sidecars_from_their_own_namespaces():
    deployment = one(objects(EXTERNAL_REDIS_TLS), "Deployment", "tollgate-controller")
    e = env(deployment)
    # The controller reads its files from a projected volume of its own namespace's Secrets.
    assert e["TOLLGATE_REDIS_CA"]["value"] == "/var/run/tollgate/redis-tls/ca.crt"
    assert e["TOLLGATE_REDIS_CLIENT_CERT"]["value"] == "/var/run/tollgate/redis-tls/tls.crt"
    assert e["TOLLGATE_REDIS_CLIENT_KEY"]["value"] == "/var/run/tollgate/redis-tls/tls.key"
    pod = deployment["spec"]["template"]["spec"]
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["redis-tls"] == {"name": "redis-tls", "mountPath": "/var/run/tollgate/redis-tls", "readOnly": True}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["redis-tls"]["projected"]["sources"] == [
        {"secret": {"name": "redis-ca", "items": [{"key": "ca.pem", "path": "ca.crt"}]}},
        {"secret": {"name": "tollgate-redis-client", "items": [
            {"key": "tls.crt", "path": "tls.crt"}, {"key": "tls.key", "path": "tls.key"}]}},
    ]
    # The webhook's own certificate is still mounted beside it when cert-manager makes it.
    with_cert_manager = {**EXTERNAL_REDIS_TLS, "webhook": {"certManager": {"enabled": True}}}
    pod = one(objects(with_cert_manager), "Deployment", "tollgate-controller")["spec"]["template"]["spec"]
    assert {v["name"] for v in pod["volumes"]} == {"webhook-tls", "redis-tls"}
    assert {m["name"] for m in pod["containers"][0]["volumeMounts"]} == {"webhook-tls", "redis-tls"}
    # Sidecars: objects of their own namespace, named to the injector.
    assert e["TOLLGATE_SIDECAR_REDIS_CA_CONFIGMAP"]["value"] == "redis-ca:ca.pem"
    assert e["TOLLGATE_SIDECAR_REDIS_CLIENT_SECRET"]["value"] == "redis-client"

    # The CA alone: no client certificate anywhere, and the sidecars get the CA the controller
    # publishes in its CA ConfigMap (the injector's default), so nothing names one for them.
    ca_only = {
        "redis": {**EXTERNAL_REDIS["redis"], "tls": {"caSecret": {"name": "redis-ca", "key": "ca.crt"}}},
        "injection": EXTERNAL_REDIS["injection"],
    }
    deployment = one(objects(ca_only), "Deployment", "tollgate-controller")
    e = env(deployment)
    assert "TOLLGATE_REDIS_CLIENT_CERT" not in e and "TOLLGATE_SIDECAR_REDIS_CLIENT_SECRET" not in e
    assert "TOLLGATE_SIDECAR_REDIS_CA_CONFIGMAP" not in e
    # The controller publishes its CA ConfigMap (--ca-config-map's default, tollgate-ca.crt).
    assert "TOLLGATE_CA_CONFIG_MAP" not in e
    assert e["TOLLGATE_REDIS_CA"]["value"] == "/var/run/tollgate/redis-tls/ca.crt"
    [volume] = deployment["spec"]["template"]["spec"]["volumes"]
    assert volume["projected"]["sources"] == [{"secret": {"name": "redis-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}]

    # Without TLS settings: nothing of it.
    for values in (None, EXTERNAL_REDIS):
        deployment = one(objects(values), "Deployment", "tollgate-controller")
        e = env(deployment)
        assert not {n for n in e if "REDIS_CA" in n or "REDIS_CLIENT" in n}, e
        assert "volumes" not in deployment["spec"]["template"]["spec"]


@pytest.mark.parametrize(
    "values, message",
    [
        # A controller with a client certificate while its sidecars have none: said at install.
        ({**EXTERNAL_REDIS_TLS, "injection": {**EXTERNAL_REDIS["injection"], "redisCaConfigMap": "ca"}},
         "redis.tls.clientSecret: sidecars cannot read a Secret of the release namespace"),
        # TLS files for a Redis without TLS would mean nothing.
        ({"redis": {"bundled": {"enabled": True}, "tls": {"caSecret": {"name": "a", "key": "b"}}},
          "injection": {"redisCaConfigMap": "a"}},
         "redis.tls: the TLS files are for a rediss:// redis.url"),
        ({"redis": {"url": "redis://redis:6379"}, "injection": {"redisCaConfigMap": "a"}},
         "injection.redisCaConfigMap, injection.redisClientSecret: the sidecars' TLS files are for a rediss://"),
    ],
)
def test_redis_tls_settings_that_cannot_work_are_refused_at_install(values, message):
    with pytest.raises(helm.HelmError) as refused:
        objects(values)
    assert message in str(refused.value)


def test_the_bundled_redis_needs_its_generated_password_and_admits_only_its_clients():
    values = {"redis": {"bundled": {"enabled": True, "clientNamespaces": ["default", "shop"]}}}
    objs = objects(values)
    secret = one(objs, "Secret", "tollgate-redis")
    assert secret["metadata"]["namespace"] == NS
    password = base64.b64decode(secret["data"]["password"]).decode()
    assert re.fullmatch(r"[A-Za-z0-9]{40}", password), "random and URL-safe"
    again = one(objects(values), "Secret", "tollgate-redis")["data"]["password"]
    assert base64.b64decode(again).decode() != password, "each fresh install gets its own password"
    # Kept across `helm upgrade`: an existing Secret's password is reused (lookup).
    helper = source("charts/tollgate/templates/_helpers.tpl")
    assert 'lookup "v1" "Secret" .Release.Namespace (printf "%s-redis"' in helper
    urls = find(objs, "Secret", "tollgate-redis-url")
    assert {u["metadata"]["namespace"] for u in urls} == {"default", "shop"}
    for url in urls:
        assert base64.b64decode(url["data"]["url"]).decode() == f"redis://:{password}@tollgate-redis.tollgate-system.svc:6379"

    redis = one(objs, "Deployment", "tollgate-redis")["spec"]["template"]["spec"]["containers"][0]
    script = " ".join(redis["command"])
    assert "--protected-mode yes" in script and "protected-mode no" not in script
    assert "requirepass" in script and "/conf/auth.conf" in script
    assert {e["name"]: e["valueFrom"]["secretKeyRef"] for e in redis["env"]} == {
        "REDIS_PASSWORD": {"name": "tollgate-redis", "key": "password"},
        "REDISCLI_AUTH": {"name": "tollgate-redis", "key": "password"},
    }
    # The password is never written into a pod spec in the clear.
    for deployment in find(objs, "Deployment"):
        assert password not in yaml.safe_dump(deployment)

    policy = one(objs, "NetworkPolicy", "tollgate-redis")
    sources = policy["spec"]["ingress"][0]["from"]
    assert {"namespaceSelector": {}, "podSelector": {"matchLabels": {"oauth.tollgate.dev/injected": "true"}}} not in sources, "a label anyone sets, from anywhere"
    injected = [s for s in sources if "namespaceSelector" in s]
    assert injected == [{
        "namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["default", "shop"]}]},
        "podSelector": {"matchLabels": {"oauth.tollgate.dev/injected": "true"}},
    }]
    controller = [s for s in sources if "namespaceSelector" not in s]
    assert controller == [{"podSelector": {"matchLabels": one(objs, "Deployment", "tollgate-controller")["spec"]["selector"]["matchLabels"]}}]


def test_the_controller_keeps_its_store_key_in_a_secret_of_its_namespace():
    variables = env(one(objects(), "Deployment", "tollgate-controller"))
    assert variables["TOLLGATE_STORE_KEY_SECRET"]["value"] == "tollgate-system/tollgate-store-key"
    role = rules(objects(), "Role", "tollgate-controller")
    assert {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["tollgate-store-key"], "verbs": ["get", "patch"]} in role


# === RBAC: least privilege ===


def rules(objs: list[dict], kind: str, name: str) -> list[dict]:
    return one(objs, kind, name)["rules"]


@pytest.mark.parametrize("values", [None, ALL_ON], ids=["defaults", "all-on"])
def test_rbac_writes_only_what_tollgate_owns(values):
    objs = objects(values)
    for role in find(objs, "ClusterRole") + find(objs, "Role"):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], f"{role['metadata']['name']}: wildcard {field}"

    allowed_writes = {
        # (kind, group, resource) -> (verbs, resourceNames or None)
        ("ClusterRole", "oauth.tollgate.dev", "oauthservices/status"): ({"patch"}, None),
        ("ClusterRole", "oauth.tollgate.dev", "consumers/status"): ({"patch"}, None),
        ("ClusterRole", "oauth.tollgate.dev", "oauthapplications/status"): ({"patch"}, None),
        ("ClusterRole", "events.k8s.io", "events"): ({"create", "patch"}, None),
        ("ClusterRole", "authentication.k8s.io", "tokenreviews"): ({"create"}, None),
        ("ClusterRole", "authorization.k8s.io", "subjectaccessreviews"): ({"create"}, None),
        ("ClusterRole", "admissionregistration.k8s.io", "mutatingwebhookconfigurations"): ({"patch"}, ["tollgate"]),
        ("ClusterRole", "apiregistration.k8s.io", "apiservices"): ({"patch"}, ["v1alpha1.tokens.oauth.tollgate.dev"]),
        ("ClusterRole", "networking.k8s.io", "networkpolicies"): ({"patch", "create"}, ["tollgate-injected-pods"]),
        ("ClusterRole", "", "configmaps"): ({"patch", "create"}, ["tollgate-ca.crt"]),
        ("Role", "coordination.k8s.io", "leases"): ({"create", "update"}, None),
        ("Role", "", "secrets"): ({"create", "patch"}, None),
    }
    for kind in ("ClusterRole", "Role"):
        for rule in rules(objs, kind, "tollgate-controller"):
            writes = set(rule["verbs"]) & WRITE_VERBS
            if not writes:
                continue
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    key = (kind, group, resource)
                    assert key in allowed_writes, f"{kind} may {sorted(writes)} {group}/{resource}"
                    verbs, names = allowed_writes[key]
                    assert writes <= verbs, f"{key}: {sorted(writes)}"
                    if names is not None:
                        assert rule.get("resourceNames") == names, f"{key} must name its object"
                    # `patch` of a Secret is only of the store key's.
                    if resource == "secrets" and "patch" in writes:
                        assert rule.get("resourceNames") == ["tollgate-store-key"]
                    # `update` of a Lease is only of the controller's own.
                    if resource == "leases" and "update" in writes:
                        assert rule.get("resourceNames") == ["tollgate-controller"]

    # The Role's writes stay in the release namespace.
    assert one(objs, "Role", "tollgate-controller")["metadata"]["namespace"] == NS
    # Reads: the three kinds, pods and Secrets, and nothing written outside the list above.
    cluster = rules(objs, "ClusterRole", "tollgate-controller")
    reads = {(g, r) for rule in cluster for g in rule["apiGroups"] for r in rule["resources"] if "watch" in rule["verbs"]}
    assert reads == {
        ("oauth.tollgate.dev", "oauthservices"), ("oauth.tollgate.dev", "consumers"),
        ("oauth.tollgate.dev", "oauthapplications"), ("", "pods"), ("", "secrets"),
    }


def test_with_cert_manager_the_controller_cannot_touch_webhook_configurations():
    cluster = rules(objects(ALL_ON), "ClusterRole", "tollgate-controller")
    assert not [r for r in cluster if "admissionregistration.k8s.io" in r["apiGroups"]]


def test_token_roles_grant_only_the_admin_api():
    objs = objects()
    assert rules(objs, "ClusterRole", "tollgate-token-admin") == [
        {"apiGroups": ["tokens.oauth.tollgate.dev"], "resources": ["oauthtokens"], "verbs": ["get", "list", "delete", "deletecollection", "create"]}
    ]
    assert rules(objs, "ClusterRole", "tollgate-token-viewer") == [
        {"apiGroups": ["tokens.oauth.tollgate.dev"], "resources": ["oauthtokens"], "verbs": ["get", "list"]}
    ]
    binding = one(objs, "ClusterRoleBinding", "tollgate-controller")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "tollgate-controller", "namespace": NS}]


# === tokens as a Kubernetes API ===


def test_the_api_service_points_at_the_controller_s_admin_port():
    objs = objects()
    api = one(objs, "APIService", "v1alpha1.tokens.oauth.tollgate.dev")
    spec = api["spec"]
    assert (spec["group"], spec["version"]) == ("tokens.oauth.tollgate.dev", "v1alpha1")
    assert spec["service"] == {"name": "tollgate-controller", "namespace": NS, "port": 8444}
    # Below every built-in group; the controller patches the caBundle in, so none is rendered
    # and TLS is never skipped.
    assert 0 < spec["groupPriorityMinimum"] < 17000
    assert spec["versionPriority"] > 0
    assert "caBundle" not in spec and not spec.get("insecureSkipTLSVerify")
    service = one(objs, "Service", "tollgate-controller")
    assert {"name": "admin", "port": 8444, "targetPort": "admin", "appProtocol": "https"} in service["spec"]["ports"]
    env = one(objs, "Deployment", "tollgate-controller")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "TOLLGATE_API_SERVICE", "value": "v1alpha1.tokens.oauth.tollgate.dev"} in env
    # The serving certificate names the Service the API server dials.
    sans = next(e["value"] for e in env if e["name"] == "TOLLGATE_TLS_SANS").split(",")
    assert f"tollgate-controller.{NS}.svc" in sans


def test_the_controller_may_patch_its_own_api_service_and_read_the_front_proxy_settings():
    objs = objects()
    cluster = rules(objs, "ClusterRole", "tollgate-controller")
    assert {"apiGroups": ["apiregistration.k8s.io"], "resources": ["apiservices"],
            "resourceNames": ["v1alpha1.tokens.oauth.tollgate.dev"], "verbs": ["get", "patch"]} in cluster
    delegator = one(objs, "ClusterRoleBinding", "tollgate-controller:system:auth-delegator")
    assert delegator["roleRef"]["name"] == "system:auth-delegator"
    reader = one(objs, "RoleBinding", "tollgate-controller:extension-apiserver-authentication-reader")
    assert reader["metadata"]["namespace"] == "kube-system"
    assert reader["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "extension-apiserver-authentication-reader"}
    for binding in (delegator, reader):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "tollgate-controller", "namespace": NS}]


def test_the_token_roles_aggregate_into_the_built_in_roles():
    objs = objects()
    labels = lambda name: one(objs, "ClusterRole", name)["metadata"]["labels"]
    viewer, admin = labels("tollgate-token-viewer"), labels("tollgate-token-admin")
    assert viewer.get("rbac.authorization.k8s.io/aggregate-to-view") == "true"
    assert "rbac.authorization.k8s.io/aggregate-to-edit" not in viewer
    assert "rbac.authorization.k8s.io/aggregate-to-admin" not in viewer
    assert admin.get("rbac.authorization.k8s.io/aggregate-to-admin") == "true"
    assert admin.get("rbac.authorization.k8s.io/aggregate-to-edit") == "true"
    assert "rbac.authorization.k8s.io/aggregate-to-view" not in admin
    off = objects({"tokenRoles": {"aggregateToBuiltInRoles": False}})
    assert not [k for k in one(off, "ClusterRole", "tollgate-token-admin")["metadata"]["labels"] if k.startswith("rbac.")]


def test_without_the_aggregated_api_nothing_of_it_is_rendered():
    objs = objects({"aggregatedApi": {"enabled": False}})
    assert not find(objs, "APIService")
    assert not find(objs, "RoleBinding", "tollgate-controller:extension-apiserver-authentication-reader")
    assert not [r for r in rules(objs, "ClusterRole", "tollgate-controller") if "apiregistration.k8s.io" in r["apiGroups"]]
    env = one(objs, "Deployment", "tollgate-controller")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert not [e for e in env if e["name"] == "TOLLGATE_API_SERVICE"]


# === the webhook ===


def webhooks(values=None) -> dict[str, dict]:
    config = one(objects(values), "MutatingWebhookConfiguration", "tollgate")
    return {w["name"]: w for w in config["webhooks"]}


def selector(webhook: dict) -> dict[str, tuple[str, set]]:
    return {e["key"]: (e["operator"], set(e["values"])) for e in webhook["namespaceSelector"]["matchExpressions"]}


def test_webhooks_see_pod_creation_only_and_never_the_cluster_s_own_namespaces():
    hooks = webhooks()
    # The names and paths the controller serves (crates/inject/src/webhook.rs).
    code = source("crates/inject/src/webhook.rs")
    names = dict(re.findall(r'pub const (\w+_WEBHOOK): &str = "([^"]+)"', code))
    paths = {names[const]: path for const, path in re.findall(r'\((\w+_WEBHOOK), "([^"]+)"\)', code)}
    assert paths == {"annotated.inject.tollgate.dev": "/mutate", "namespace.inject.tollgate.dev": "/mutate/namespace"}
    assert set(hooks) == set(paths)
    for name, webhook in hooks.items():
        assert webhook["rules"] == [{
            "apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
            "resources": ["pods"], "scope": "Namespaced",
        }]
        assert webhook["sideEffects"] == "None"
        assert webhook["admissionReviewVersions"] == ["v1"]
        assert webhook["failurePolicy"] == "Fail"
        assert webhook["timeoutSeconds"] == 5
        assert webhook["clientConfig"] == {"service": {
            "name": "tollgate-controller", "namespace": NS, "path": paths[name], "port": 9443}}
        operator, names = selector(webhook)["kubernetes.io/metadata.name"]
        assert operator == "NotIn" and names == EXCLUDED
    assert selector(hooks["annotated.inject.tollgate.dev"])["tollgate.dev/inject"] == ("NotIn", {"enabled", "disabled"})
    assert selector(hooks["namespace.inject.tollgate.dev"])["tollgate.dev/inject"] == ("In", {"enabled"})
    # Only pods that carry a tollgate.dev/ annotation reach the annotation webhook.
    [condition] = hooks["annotated.inject.tollgate.dev"]["matchConditions"]
    assert "startsWith('tollgate.dev/')" in condition["expression"]
    assert "matchConditions" not in hooks["namespace.inject.tollgate.dev"]


def test_without_match_conditions_unrelated_pods_are_never_blocked():
    hooks = webhooks({"webhook": {"matchConditions": False}})
    assert hooks["annotated.inject.tollgate.dev"]["failurePolicy"] == "Ignore"
    assert "matchConditions" not in hooks["annotated.inject.tollgate.dev"]
    assert hooks["namespace.inject.tollgate.dev"]["failurePolicy"] == "Fail"


def test_a_webhook_url_for_clusters_without_kube_proxy():
    hooks = webhooks({"webhook": {"url": "https://127.0.0.1:9443/mutate"}})
    assert hooks["annotated.inject.tollgate.dev"]["clientConfig"] == {"url": "https://127.0.0.1:9443/mutate"}
    assert hooks["namespace.inject.tollgate.dev"]["clientConfig"] == {"url": "https://127.0.0.1:9443/mutate/namespace"}
    variables = env(one(objects({"webhook": {"url": "https://127.0.0.1:9443/mutate"}}), "Deployment", "tollgate-controller"))
    assert variables["TOLLGATE_WEBHOOK_URL"]["value"] == "https://127.0.0.1:9443/mutate"


def test_cert_manager_injects_the_ca_and_serves_the_certificate():
    objs = objects(ALL_ON)
    config = one(objs, "MutatingWebhookConfiguration", "tollgate")
    assert config["metadata"]["annotations"] == {"cert-manager.io/inject-ca-from": f"{NS}/tollgate-webhook"}
    variables = env(one(objs, "Deployment", "tollgate-controller"))
    assert variables["TOLLGATE_WEBHOOK_TLS_CERT"]["value"] == "/var/run/tollgate/webhook-tls/tls.crt"
    assert "TOLLGATE_WEBHOOK_CONFIGURATION" not in variables
    pod = one(objs, "Deployment", "tollgate-controller")["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "webhook-tls", "secret": {"secretName": "tollgate-webhook-tls"}}]
    assert one(objs, "Certificate", "tollgate-webhook")["spec"]["secretName"] == "tollgate-webhook-tls"


def test_the_webhook_can_be_turned_off():
    objs = objects({"webhook": {"enabled": False}})
    assert not find(objs, "MutatingWebhookConfiguration")
    assert "TOLLGATE_WEBHOOK_LISTEN" not in env(one(objs, "Deployment", "tollgate-controller"))


# === the NetworkPolicy ===


def test_the_network_policy_admits_only_8443_to_injected_pods():
    label = re.search(r'pub const LABEL_INJECTED: &str = "([^"]+)"', source("crates/inject/src/lib.rs")).group(1)
    policy = one(objects({"networkPolicy": {"metricsNamespaceSelector": None}}), "NetworkPolicy", "tollgate-injected-pods")
    assert policy["metadata"]["namespace"] == "default"
    assert policy["spec"]["podSelector"] == {"matchLabels": {label: "true"}}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["ingress"] == [{"ports": [{"port": 8443, "protocol": "TCP"}]}]

    policy = find(objects(ALL_ON), "NetworkPolicy", "tollgate-injected-pods")[0]
    ingress = policy["spec"]["ingress"]
    assert ingress[0]["ports"] == [{"port": 8443, "protocol": "TCP"}]
    assert ingress[0]["from"] == ALL_ON["networkPolicy"]["proxyFrom"]
    assert ingress[1] == {"ports": [{"port": 9090, "protocol": "TCP"}], "from": ALL_ON["networkPolicy"]["metricsFrom"] + [PROMETHEUS]}

    assert not find(objects({"networkPolicy": {"enabled": False}}), "NetworkPolicy")


def test_the_controller_keeps_the_injected_pods_policy_in_every_namespace():
    objs = objects(ALL_ON)
    e = env(one(objs, "Deployment", "tollgate-controller"))
    assert e["TOLLGATE_NETWORK_POLICY_NAME"]["value"] == "tollgate-injected-pods"
    assert json.loads(e["TOLLGATE_NETWORK_POLICY_PROXY_FROM"]["value"]) == ALL_ON["networkPolicy"]["proxyFrom"]
    assert json.loads(e["TOLLGATE_NETWORK_POLICY_METRICS_FROM"]["value"]) == ALL_ON["networkPolicy"]["metricsFrom"] + [PROMETHEUS]
    cluster = rules(objs, "ClusterRole", "tollgate-controller")
    assert {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"],
            "resourceNames": ["tollgate-injected-pods"], "verbs": ["get", "patch", "create"]} in cluster
    off = objects({"networkPolicy": {"enabled": False}})
    assert "TOLLGATE_NETWORK_POLICY_NAME" not in env(one(off, "Deployment", "tollgate-controller"))
    assert not [r for r in rules(off, "ClusterRole", "tollgate-controller") if "networking.k8s.io" in r["apiGroups"]]


def test_the_controller_may_publish_its_ca_in_the_tollgate_ca_config_map_only():
    ca_rule = {"apiGroups": [""], "resources": ["configmaps"],
               "resourceNames": ["tollgate-ca.crt"], "verbs": ["get", "patch", "create"]}
    assert ca_rule in rules(objects(), "ClusterRole", "tollgate-controller")
    narrowed = objects({"watchNamespaces": ["shop"]})
    assert ca_rule not in rules(narrowed, "ClusterRole", "tollgate-controller")
    assert ca_rule in one(narrowed, "Role", "tollgate-controller-watch")["rules"]


def test_watch_namespaces_grants_namespaced_roles_only():
    objs = objects({"watchNamespaces": ["shop", "billing"]})
    e = env(one(objs, "Deployment", "tollgate-controller"))
    assert e["TOLLGATE_WATCH_NAMESPACES"]["value"] == "shop,billing"
    cluster = rules(objs, "ClusterRole", "tollgate-controller")
    groups = {g for r in cluster for g in r["apiGroups"]}
    assert groups == {"authentication.k8s.io", "authorization.k8s.io", "admissionregistration.k8s.io", "apiregistration.k8s.io"}
    roles = [o for o in find(objs, "Role", "tollgate-controller-watch")]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["billing", "shop"]
    for role in roles:
        resources = {res for r in role["rules"] for res in r["resources"]}
        assert {"pods", "secrets", "oauthservices", "oauthservices/status", "networkpolicies"} <= resources
    bindings = find(objs, "RoleBinding", "tollgate-controller-watch")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["billing", "shop"]
    assert all(b["subjects"][0]["namespace"] == NS for b in bindings)
    for webhook in one(objs, "MutatingWebhookConfiguration")["webhooks"]:
        assert {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["shop", "billing"]} in \
            webhook["namespaceSelector"]["matchExpressions"]
    # The default: one ClusterRole reads everywhere, no watch Roles.
    objs = objects()
    assert "TOLLGATE_WATCH_NAMESPACES" not in env(one(objs, "Deployment", "tollgate-controller"))
    assert not find(objs, "Role", "tollgate-controller-watch")
    assert {"pods", "secrets"} <= {res for r in rules(objs, "ClusterRole", "tollgate-controller") for res in r["resources"]}


def test_the_controllers_network_policy_opens_its_listeners_only():
    label = re.search(r'pub const LABEL_INJECTED: &str = "([^"]+)"', source("crates/inject/src/lib.rs")).group(1)
    policy = one(objects(), "NetworkPolicy", "tollgate-controller")
    assert policy["metadata"]["namespace"] == NS
    assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "controller"
    ingress = policy["spec"]["ingress"]
    assert ingress[0] == {
        "ports": [{"port": 8090, "protocol": "TCP"}],
        "from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {label: "true"}}}],
    }
    assert ingress[1] == {"ports": [{"port": 8444, "protocol": "TCP"}, {"port": 9443, "protocol": "TCP"}]}
    assert ingress[2] == {"ports": [{"port": 9090, "protocol": "TCP"}], "from": [PROMETHEUS]}
    assert len(ingress) == 3, "metrics only from metricsFrom and metricsNamespaceSelector"
    ingress = one(objects(ALL_ON), "NetworkPolicy", "tollgate-controller")["spec"]["ingress"]
    assert ingress[-1] == {"ports": [{"port": 9090, "protocol": "TCP"}], "from": ALL_ON["networkPolicy"]["metricsFrom"] + [PROMETHEUS]}
    closed = one(objects({"networkPolicy": {"metricsNamespaceSelector": None}}), "NetworkPolicy", "tollgate-controller")
    assert len(closed["spec"]["ingress"]) == 2


# === generated files kept in step ===


def test_the_chart_crds_are_the_generated_ones():
    assert (CHART / "files" / "crds.yaml").read_text() == (ROOT / "crds" / "tollgate.yaml").read_text(), \
        "charts/tollgate/files/crds.yaml differs from crds/: run `make crds`"
    # Helm never upgrades crds/: the CRDs are templates instead, so none may be left there.
    assert not (CHART / "crds").exists()
    with helm.Chart.load(CHART) as chart:
        assert chart.crds == []


def test_crds_are_templates_that_upgrade_and_survive_uninstall():
    generated = {d["metadata"]["name"]: d for d in yaml.safe_load_all(source("crds/tollgate.yaml")) if d}
    rendered = find(objects(), "CustomResourceDefinition")
    assert sorted(c["metadata"]["name"] for c in rendered) == sorted(generated)
    for crd in rendered:
        metadata = dict(crd["metadata"])
        assert metadata.pop("annotations") == {"helm.sh/resource-policy": "keep"}
        assert metadata.pop("labels")["app.kubernetes.io/managed-by"] == "Helm"
        assert {**crd, "metadata": metadata} == generated[metadata["name"]], "the generated CRD, unchanged"
    assert not find(objects({"crds": {"install": False}}), "CustomResourceDefinition")


def test_deploy_manifest_is_the_rendered_chart():
    committed = (ROOT / "deploy" / "tollgate.yaml").read_text()
    assert committed == render.deploy_manifest(), "deploy/tollgate.yaml is out of date: run `make deploy`"
    kinds = [d["kind"] for d in yaml.safe_load_all(committed) if d]
    assert kinds[0] == "Namespace" and kinds.count("CustomResourceDefinition") == 3
    assert kinds.index("CustomResourceDefinition") < kinds.index("Deployment")
    assert kinds[-1] == "MutatingWebhookConfiguration"


def test_chart_version_follows_the_workspace():
    version = re.search(r'^version = "([^"]+)"', source("Cargo.toml"), re.M).group(1)
    with helm.Chart.load(CHART) as chart:
        assert chart.metadata["appVersion"] == version


# === issue 18, part 3: a chart that installs on any cluster ===


def test_monitors_are_rendered_only_when_enabled():
    objs = objects()
    assert not [o for o in objs if o["apiVersion"].startswith("monitoring.coreos.com/")]
    objs = objects(ALL_ON)
    service_monitor = one(objs, "ServiceMonitor", "tollgate-controller")
    service = one(objs, "Service", "tollgate-controller")
    assert service_monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert service_monitor["spec"]["namespaceSelector"] == {"matchNames": [NS]}
    [endpoint] = service_monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]} and endpoint["port"] == "metrics"
    assert endpoint["interval"] == "15s" and endpoint["path"] == "/metrics"
    assert service_monitor["metadata"]["labels"]["release"] == "prometheus"
    pod_monitor = one(objs, "PodMonitor", "tollgate-sidecars")
    label = re.search(r'pub const LABEL_INJECTED: &str = "([^"]+)"', source("crates/inject/src/lib.rs")).group(1)
    port = re.search(r'pub const METRICS_PORT_NAME: &str = "([^"]+)"', source("crates/inject/src/sidecar.rs")).group(1)
    assert pod_monitor["spec"]["selector"] == {"matchLabels": {label: "true"}}
    assert pod_monitor["spec"]["namespaceSelector"] == {"any": True}
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["port"] == port
    narrowed = one(objects({"podMonitor": {"enabled": True}, "watchNamespaces": ["shop"]}), "PodMonitor")
    assert narrowed["spec"]["namespaceSelector"] == {"matchNames": ["shop"]}


def test_prometheus_may_scrape_metrics_by_default():
    objs = objects()
    for policy in (one(objs, "NetworkPolicy", "tollgate-injected-pods"), one(objs, "NetworkPolicy", "tollgate-controller")):
        metrics = [rule for rule in policy["spec"]["ingress"] if rule["ports"] == [{"port": 9090, "protocol": "TCP"}]]
        assert metrics == [{"ports": [{"port": 9090, "protocol": "TCP"}], "from": [PROMETHEUS]}], policy["metadata"]["name"]
    # The controller keeps the same peers in the policies it applies.
    e = env(one(objs, "Deployment", "tollgate-controller"))
    assert json.loads(e["TOLLGATE_NETWORK_POLICY_METRICS_FROM"]["value"]) == [PROMETHEUS]
    custom = {"matchLabels": {"kubernetes.io/metadata.name": "observability"}}
    policy = one(objects({"networkPolicy": {"metricsNamespaceSelector": custom}}), "NetworkPolicy", "tollgate-injected-pods")
    assert policy["spec"]["ingress"][1]["from"] == [{"namespaceSelector": custom}]


def test_extra_ports_open_on_injected_pods_and_reach_the_controller():
    values = {"networkPolicy": {"extraPorts": [
        {"port": 1972},
        {"port": 1973, "protocol": "TCP", "from": [{"podSelector": {"matchLabels": {"app": "etl"}}}]},
    ]}}
    objs = objects(values)
    ingress = one(objs, "NetworkPolicy", "tollgate-injected-pods")["spec"]["ingress"]
    expected = [
        {"ports": [{"port": 1972, "protocol": "TCP"}]},
        {"ports": [{"port": 1973, "protocol": "TCP"}], "from": [{"podSelector": {"matchLabels": {"app": "etl"}}}]},
    ]
    assert ingress[-2:] == expected
    e = env(one(objs, "Deployment", "tollgate-controller"))
    assert json.loads(e["TOLLGATE_NETWORK_POLICY_EXTRA_INGRESS"]["value"]) == expected
    assert "TOLLGATE_NETWORK_POLICY_EXTRA_INGRESS" not in env(one(objects(), "Deployment", "tollgate-controller"))
    with helm.Chart.load(CHART) as chart:
        for bad in ({"port": 0}, {"port": 1972, "protocol": "HTTP"}, {"prot": 1972}):
            with pytest.raises(helm.HelmError):
                chart.validate_schema(chart.merge_values({"networkPolicy": {"extraPorts": [bad]}}))


@pytest.mark.parametrize("replicas", [1, 3])
def test_the_pdb_never_blocks_a_drain(replicas):
    pdbs = find(objects({"controller": {"replicas": replicas}}), "PodDisruptionBudget")
    if replicas == 1:
        assert pdbs == [], "one replica: a budget would block every drain"
    else:
        assert pdbs[0]["spec"] == {
            "maxUnavailable": 1,
            "selector": pdbs[0]["spec"]["selector"],
        }
    chosen = one(objects({"controller": {"replicas": 3, "podDisruptionBudget": {"minAvailable": 2}}}), "PodDisruptionBudget")
    assert chosen["spec"]["minAvailable"] == 2 and "maxUnavailable" not in chosen["spec"]


def test_security_contexts_are_overridable_and_run_as_user_omittable():
    pod = one(objects(), "Deployment", "tollgate-controller")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 65532
    # OpenShift assigns UIDs: null removes a default key.
    openshift = {
        "controller": {"podSecurityContext": {"runAsUser": None, "runAsGroup": None}},
        "injection": {"securityContext": {"runAsUser": None, "runAsGroup": None}},
    }
    deployment = one(objects(openshift), "Deployment", "tollgate-controller")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    sidecar = json.loads(env(deployment)["TOLLGATE_SIDECAR_SECURITY_CONTEXT"]["value"])
    assert "runAsUser" not in sidecar and "runAsGroup" not in sidecar
    assert sidecar["runAsNonRoot"] is True and sidecar["capabilities"] == {"drop": ["ALL"]}
    # The default reaches the injector whole.
    default = json.loads(env(one(objects(), "Deployment", "tollgate-controller"))["TOLLGATE_SIDECAR_SECURITY_CONTEXT"]["value"])
    assert default["runAsUser"] == 65532 and default["readOnlyRootFilesystem"] is True
    custom = one(objects({"controller": {"securityContext": {"runAsUser": 1000700000}}}), "Deployment", "tollgate-controller")
    assert custom["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsUser"] == 1000700000


def test_name_override_renames_labels_and_selectors_together():
    objs = objects({"nameOverride": "gate"})
    for obj in objs:
        labels = obj["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/name") == "gate", f"{obj['kind']} {obj['metadata']['name']}"
    deployment = one(objs, "Deployment", "tollgate-controller")
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector["app.kubernetes.io/name"] == "gate"
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert one(objs, "Service", "tollgate-controller")["spec"]["selector"] == selector
    assert one(objs, "NetworkPolicy", "tollgate-controller")["spec"]["podSelector"]["matchLabels"] == selector
    redis = objects({"nameOverride": "gate", "redis": {"bundled": {"enabled": True}}})
    redis_deployment = one(redis, "Deployment", "tollgate-redis")
    assert redis_deployment["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == "gate"
    assert one(redis, "Service", "tollgate-redis")["spec"]["selector"] == redis_deployment["spec"]["selector"]["matchLabels"]


def test_the_bundled_redis_persists_tokens_on_a_pvc_by_default():
    objs = objects({"redis": {"bundled": {"enabled": True}}})
    claim = one(objs, "PersistentVolumeClaim", "tollgate-redis")
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert "storageClassName" not in claim["spec"], "the cluster's default class"
    deployment = one(objs, "Deployment", "tollgate-redis")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}, "one ReadWriteOnce volume"
    pod = deployment["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["data"] == {"name": "data", "persistentVolumeClaim": {"claimName": "tollgate-redis"}}
    script = pod["containers"][0]["command"][-1]
    assert "--appendonly yes" in script and "--dir /data" in script
    # The password file never lands on the persistent volume.
    assert "> /conf/auth.conf" in script and volumes["conf"]["emptyDir"]["medium"] == "Memory"

    sized = one(objects(ALL_ON), "PersistentVolumeClaim", "tollgate-redis")
    assert sized["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert sized["spec"]["storageClassName"] == "fast"

    off = objects({"redis": {"bundled": {"enabled": True, "persistence": {"enabled": False}}}})
    assert not find(off, "PersistentVolumeClaim")
    pod = one(off, "Deployment", "tollgate-redis")["spec"]["template"]["spec"]
    assert {v["name"]: v for v in pod["volumes"]}["data"] == {"name": "data", "emptyDir": {}}
    assert "--appendonly no" in pod["containers"][0]["command"][-1]


def test_a_license_matches_cargo_toml():
    assert re.search(r'^license = "Apache-2.0"$', source("Cargo.toml"), re.M)
    text = source("LICENSE")
    assert text.lstrip().startswith("Apache License\n                           Version 2.0, January 2004")
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert "END OF TERMS AND CONDITIONS" in text and "APPENDIX: How to apply the Apache License" in text
