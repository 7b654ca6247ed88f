"""The KubeRay deployment (deploy/k8s/) and the production config, checked offline.

Core kinds (ConfigMap, Secret, PersistentVolumeClaim) are validated against Kubernetes' own
schemas in strict mode (kubernetes-validate ships them; unknown fields are errors). KubeRay
kinds (RayCluster, RayJob, RayService) are validated against the openAPIV3Schema of
KubeRay's CRDs, vendored in schemas/kuberay/ (its README names the release and commit). The
CRDs do not forbid unknown fields (the API server prunes them, or refuses them under strict
field validation), so the validator here refuses them the same way: an object schema that
lists `properties` and neither `additionalProperties` nor `x-kubernetes-preserve-unknown-fields`
admits no other keys. A KubeRay resource's metadata (`type: object` in the CRDs) and its pod
templates are also checked as Kubernetes ObjectMeta and PodTemplate. The CRDs' CEL rules
(`x-kubernetes-validations`) are not evaluated.

The rest checks that the pieces fit: the ConfigMap carries deploy/production.yaml verbatim,
every Secret, ConfigMap and volume reference resolves, the pods mount what the config names,
the pod sizes match the config's actor counts, and the RayService's Serve config imports the
app builder. Nothing here starts Ray or reaches a cluster.
"""

from __future__ import annotations

import copy
import difflib
import functools
import importlib
import json
import shlex
from collections.abc import Iterator
from importlib.metadata import version as installed_version
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from online_distill.config import Config, ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
PRODUCTION = ROOT / "deploy" / "production.yaml"
CRD_SCHEMAS = Path(__file__).resolve().parent / "schemas" / "kuberay"

EXPECTED_FILES = {
    "rayservice.yaml", "rayjob.yaml", "raycluster.yaml", "configmap.yaml", "secret.yaml",
    "pvc.yaml",
}
K8S_VERSIONS = ("1.29", "1.37")
"""Kubernetes versions whose schemas the manifests must satisfy: an older supported release
and the newest that kubernetes-validate ships."""
CORE_KINDS = frozenset({"ConfigMap", "Secret", "PersistentVolumeClaim"})
CRD_FILES = {"RayCluster": "rayclusters.json", "RayJob": "rayjobs.json",
             "RayService": "rayservices.json"}
LOOP_KINDS = ("RayCluster", "RayJob")
CONFIG_FILE = "/etc/online-distill/production.yaml"
ENTRYPOINT = "online-distill up --file /etc/online-distill/production.yaml ray.address=auto"
IMPORT_PATH = "online_distill.actors.serve:app_builder"


# ---------------------------------------------------------------------------------------------
# Loading


@functools.cache
def _manifests() -> dict[str, dict[str, Any]]:
    """Every document of deploy/k8s/*.yaml by kind (each kind appears once)."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is None:
                continue
            assert isinstance(doc, dict) and "kind" in doc, f"{path.name}: not a manifest"
            assert doc["kind"] not in out, f"{path.name}: a second {doc['kind']}"
            out[doc["kind"]] = doc
    return out


def manifest(kind: str) -> dict[str, Any]:
    """A deep copy of the manifest of `kind`, safe to change."""
    return copy.deepcopy(_manifests()[kind])


@functools.cache
def production() -> Config:
    return load_config(PRODUCTION)


def cluster_spec(doc: dict[str, Any]) -> dict[str, Any]:
    """The RayCluster spec inside a KubeRay resource."""
    key = {"RayCluster": None, "RayJob": "rayClusterSpec", "RayService": "rayClusterConfig"}
    spec = doc["spec"]
    return spec if key[doc["kind"]] is None else spec[key[doc["kind"]]]


def groups(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The head ('head') and every worker group of a KubeRay resource, by group name."""
    spec = cluster_spec(doc)
    out = {"head": spec["headGroupSpec"]}
    out.update({g["groupName"]: g for g in spec.get("workerGroupSpecs", [])})
    return out


def containers(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(group name, pod spec, container) for every container of a KubeRay resource."""
    for name, group in groups(doc).items():
        pod = group["template"]["spec"]
        for container in pod["containers"]:
            yield name, pod, container


def walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(path, node) for every node of a YAML tree."""
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}[{i}]")


def _path(parts: Any) -> str:
    return ".".join(str(p) for p in parts) or "<root>"


# ---------------------------------------------------------------------------------------------
# Validators


def core_errors(doc: dict[str, Any], k8s_version: str) -> list[str]:
    """Errors of a core Kubernetes object against the strict schema (first error only)."""
    try:
        kubernetes_validate.validate(doc, k8s_version, strict=True)
    except kubernetes_validate.ValidationError as err:
        return [f"{_path(err.path)}: {err.message}"]
    return []


_DRAFT4_PROPERTIES = jsonschema.Draft4Validator.VALIDATORS["properties"]


def _known_properties_only(validator: Any, properties: dict[str, Any], instance: Any,
                           schema: dict[str, Any]) -> Iterator[jsonschema.ValidationError]:
    """Draft 4 `properties`, and no other keys unless the schema admits unknown ones."""
    yield from _DRAFT4_PROPERTIES(validator, properties, instance, schema)
    if (not validator.is_type(instance, "object") or "additionalProperties" in schema
            or schema.get("x-kubernetes-preserve-unknown-fields")):
        return
    for name in sorted(set(instance) - set(properties)):
        close = difflib.get_close_matches(name, list(properties), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        yield jsonschema.ValidationError(f"unknown field {name!r}{hint}", path=(name,))


StrictCRDValidator = jsonschema.validators.extend(
    jsonschema.Draft4Validator, {"properties": _known_properties_only})
"""OpenAPI v3 schemas are Draft 4 based; `properties` also refuses keys it does not list."""


@functools.cache
def crd(kind: str) -> tuple[str, Any]:
    """(apiVersion, validator) of a vendored KubeRay CRD."""
    data = json.loads((CRD_SCHEMAS / CRD_FILES[kind]).read_text(encoding="utf-8"))
    assert data["kind"] == kind
    return data["apiVersion"], StrictCRDValidator(data["openAPIV3Schema"])


def crd_errors(doc: dict[str, Any], k8s_version: str) -> list[str]:
    """Errors of a KubeRay resource: the CRD schema, then its metadata and pod templates."""
    api_version, validator = crd(doc["kind"])
    errors = [f"{_path(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]
    if doc.get("apiVersion") != api_version:
        errors.append(f"apiVersion: {doc.get('apiVersion')!r}, expected {api_version!r}")
    if errors:
        return errors
    as_meta = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]}
    errors += core_errors(as_meta, k8s_version)
    for name, group in groups(doc).items():
        template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": name},
                    "template": group["template"]}
        errors += [f"{name} pod: {e}" for e in core_errors(template, k8s_version)]
    return errors


def manifest_errors(doc: dict[str, Any], k8s_version: str = K8S_VERSIONS[-1]) -> list[str]:
    kind = doc.get("kind")
    if kind in CORE_KINDS:
        return core_errors(doc, k8s_version)
    if kind in CRD_FILES:
        return crd_errors(doc, k8s_version)
    return [f"kind {kind!r} has no schema here; add it to CORE_KINDS or CRD_FILES"]


# ---------------------------------------------------------------------------------------------
# Schemas


def test_the_expected_manifests_are_there() -> None:
    assert {p.name for p in K8S.glob("*.yaml")} == EXPECTED_FILES
    assert set(_manifests()) == CORE_KINDS | set(CRD_FILES)


@pytest.mark.parametrize("k8s_version", K8S_VERSIONS)
@pytest.mark.parametrize("kind", sorted(CORE_KINDS | set(CRD_FILES)))
def test_manifest_matches_its_schema(kind: str, k8s_version: str) -> None:
    assert manifest_errors(manifest(kind), k8s_version) == []


RENAMES = [
    # (kind, path to the object, a field of it, the field misspelt)
    ("RayService", ("spec",), "serveConfigV2", "serveConfigv2"),
    ("RayJob", ("spec",), "entrypoint", "entryPoint"),
    ("RayCluster", ("spec", "workerGroupSpecs", 0), "replicas", "replica"),
    ("RayCluster", ("spec", "headGroupSpec", "template", "spec", "containers", 0),
     "volumeMounts", "volumeMount"),
    ("RayJob", ("spec", "rayClusterSpec", "headGroupSpec", "template", "metadata"),
     "annotations", "anotations"),
    ("RayService", ("metadata",), "labels", "label"),  # `type: object` in the CRD
    ("ConfigMap", (), "data", "datas"),
    ("Secret", (), "stringData", "stringdata"),
    ("PersistentVolumeClaim", ("spec",), "accessModes", "accessMode"),
]


@pytest.mark.parametrize(("kind", "where", "field", "typo"), RENAMES,
                         ids=[f"{r[0]}-{r[3]}" for r in RENAMES])
def test_a_misspelt_field_is_refused(kind: str, where: tuple[Any, ...], field: str,
                                     typo: str) -> None:
    doc = manifest(kind)
    node: Any = doc
    for key in where:
        node = node[key]
    node[typo] = node.pop(field)
    errors = manifest_errors(doc)
    assert errors and any(typo in e for e in errors), errors


def test_a_wrong_type_is_refused() -> None:
    doc = manifest("RayCluster")
    doc["spec"]["workerGroupSpecs"][0]["rayStartParams"]["num-gpus"] = 1  # must be a string
    errors = manifest_errors(doc)
    assert any("num-gpus" in e and "'string'" in e for e in errors), errors


def test_the_vendored_crds_name_their_source() -> None:
    readme = (CRD_SCHEMAS / "README.md").read_text(encoding="utf-8")
    assert (CRD_SCHEMAS / "LICENSE").read_text(encoding="utf-8").lstrip().startswith("Apache")
    for kind, name in CRD_FILES.items():
        source = json.loads((CRD_SCHEMAS / name).read_text(encoding="utf-8"))["source"]
        assert source["repository"] == "https://github.com/ray-project/kuberay"
        assert source["license"] == "Apache-2.0"
        assert source["commit"] in readme and source["tag"] in readme and name in readme, kind


# ---------------------------------------------------------------------------------------------
# The production config and its ConfigMap


def test_the_configmap_carries_the_production_config(tmp_path: Path) -> None:
    text = PRODUCTION.read_text(encoding="utf-8")
    data = manifest("ConfigMap")["data"]
    assert set(data) == {PurePosixPath(CONFIG_FILE).name}
    assert data["production.yaml"] == text, "copy deploy/production.yaml into configmap.yaml"
    copy_path = tmp_path / "production.yaml"
    copy_path.write_text(data["production.yaml"], encoding="utf-8")
    assert load_config(copy_path) == production()


def test_the_production_config() -> None:
    cfg = production()
    k = cfg.kafka
    assert k.bootstrap_servers and not k.embedded
    assert (k.security_protocol, k.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
    assert k.sasl_username and k.sasl_password == "" and k.ssl_cafile
    assert k.sasl_password_env == "ONLINE_DISTILL_KAFKA_PASSWORD"
    assert (cfg.teacher.backend, cfg.teacher.device) == ("vllm", "cuda")
    assert (cfg.learner.workers, cfg.learner.device) == (4, "cuda")
    # Word-level losses need one tokenizer: both models are of the Qwen2.5 family.
    assert cfg.teacher.model.startswith("Qwen/Qwen2.5-")
    assert cfg.learner.student_model.startswith("Qwen/Qwen2.5-")
    assert cfg.ray.address == "auto"
    assert cfg.serve.host == cfg.metrics.host == "0.0.0.0"
    assert not cfg.demo.enabled and cfg.demo.duration_s == 0  # `up` runs until stopped
    shared = PurePosixPath("/mnt/online-distill")
    for path in (cfg.gate.weights_dir, cfg.learner.checkpoint_dir, cfg.run_dir):
        assert PurePosixPath(path).is_relative_to(shared), path


# ---------------------------------------------------------------------------------------------
# References between the manifests


def test_every_reference_resolves() -> None:
    secret = manifest("Secret")
    secret_name, keys = secret["metadata"]["name"], set(secret["stringData"])
    configmap = manifest("ConfigMap")["metadata"]["name"]
    claim = manifest("PersistentVolumeClaim")["metadata"]["name"]
    seen = set()
    for kind in CRD_FILES:
        for path, node in walk(manifest(kind)):
            if not isinstance(node, dict):
                continue
            if "secretKeyRef" in node:
                ref = node["secretKeyRef"]
                assert (ref["name"], ref["key"] in keys) == (secret_name, True), (kind, path)
                seen.add(ref["key"])
            if "secretName" in node:
                assert node["secretName"] == secret_name, (kind, path)
                assert {i["key"] for i in node.get("items", [])} <= keys, (kind, path)
            if path.endswith(".configMap"):
                assert node["name"] == configmap, (kind, path)
            if path.endswith(".persistentVolumeClaim"):
                assert node["claimName"] == claim, (kind, path)
    assert seen == {"kafka-password", "openai-api-key"}


def test_the_secret_holds_placeholders_only() -> None:
    secret = manifest("Secret")
    assert "data" not in secret, "base64 data would hide what is in it; use stringData"
    for key, value in secret["stringData"].items():
        assert "REPLACE-WITH-" in value, f"{key}: not an obvious placeholder"


def _mounts(pod: dict[str, Any], container: dict[str, Any]) -> dict[str, tuple[str, dict]]:
    """mountPath -> (volume kind, volume source) of a container."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    out = {}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        source = next(k for k in volume if k != "name")
        out[mount["mountPath"]] = (source, volume[source])
    return out


def test_pods_mount_what_the_config_names() -> None:
    cfg = production()
    config_dir = str(PurePosixPath(CONFIG_FILE).parent)
    shared = ("/mnt/online-distill", "persistentVolumeClaim")
    ca = PurePosixPath(cfg.kafka.ssl_cafile)
    for kind in CRD_FILES:
        for group, pod, container in containers(manifest(kind)):
            where = f"{kind} {group}"
            mounts = _mounts(pod, container)
            assert mounts[config_dir][0] == "configMap", where
            assert mounts[shared[0]][0] == shared[1], where
            env = {e["name"]: e for e in container.get("env", [])}
            if kind in LOOP_KINDS:  # the loop talks to Kafka; serving does not
                source, volume = mounts[str(ca.parent)]
                assert source == "secret", where
                assert ca.name in {i["path"] for i in volume["items"]}, where
                ref = env[cfg.kafka.sasl_password_env]["valueFrom"]["secretKeyRef"]
                assert ref["key"] == "kafka-password", where
                assert env[cfg.teacher.api_key_env]["valueFrom"]["secretKeyRef"]["optional"]
            else:
                assert not [p for p, n in walk(pod) if isinstance(n, dict) and (
                    "secretKeyRef" in n or "secretName" in n)], f"{where}: needs no secrets"


def test_the_shared_volume_is_read_write_many() -> None:
    assert manifest("PersistentVolumeClaim")["spec"]["accessModes"] == ["ReadWriteMany"]


# ---------------------------------------------------------------------------------------------
# The Ray clusters


def test_the_rayjob_runs_the_loop_on_the_raycluster() -> None:
    job = manifest("RayJob")
    assert job["spec"]["entrypoint"] == ENTRYPOINT
    assert job["spec"]["rayClusterSpec"] == manifest("RayCluster")["spec"], (
        "rayjob.yaml's rayClusterSpec and raycluster.yaml's spec must stay identical")


def _cpus(group: dict[str, Any]) -> float:
    return float(group["rayStartParams"]["num-cpus"])


def _gpus(group: dict[str, Any]) -> float:
    return float(group["rayStartParams"].get("num-gpus", "0"))


def _parse_ray_resources(value: str) -> dict[str, float]:
    """A rayStartParams `resources` value as `ray start` receives it. KubeRay pastes
    `--resources=<value>` into the pod's shell command, so the value must be one shell word
    that unquotes to a JSON object; KubeRay documents the form '"{\\"Custom1\\": 1}"'."""
    words = shlex.split(value)
    assert len(words) == 1, f"resources {value!r}: {len(words)} shell words, not one"
    parsed = json.loads(words[0])
    assert isinstance(parsed, dict), f"resources {value!r}: not a JSON object"
    assert all(isinstance(v, int | float) for v in parsed.values()), value
    return parsed


def _custom_resources(group: dict[str, Any]) -> dict[str, float]:
    """The custom Ray resources a group's pods advertise (none without `resources`)."""
    value = group["rayStartParams"].get("resources")
    return {} if value is None else _parse_ray_resources(value)


def _container_resources(group: dict[str, Any]) -> dict[str, dict[str, Any]]:
    (container,) = group["template"]["spec"]["containers"]
    return container["resources"]


ACTORS_PER_POD = {"teacher": 1, "learner": 1}
"""Teacher actors per teacher pod, learner workers per learner pod."""


def _role_resources(cfg: Config) -> dict[str, dict[str, float]]:
    """The custom resources each role asks for per actor (the head hosts no stage actor)."""
    return {"head": {}, "teacher": dict(cfg.teacher.ray_resources),
            "learner": dict(cfg.learner.ray_resources)}


def test_the_loop_cluster_fits_the_config() -> None:
    cfg = production()
    g = groups(manifest("RayCluster"))
    assert set(g) == {"head", "teacher", "learner"}
    assert _cpus(g["head"]) == 0, "stage actors must run on the workers"
    assert g["teacher"]["replicas"] == cfg.teacher.num_actors
    assert g["learner"]["replicas"] == cfg.learner.workers
    for name in ("teacher", "learner"):
        group, res = g[name], _container_resources(g[name])
        assert res["limits"]["nvidia.com/gpu"] == res["requests"]["nvidia.com/gpu"] == 1
        assert group["minReplicas"] == group["replicas"] == group["maxReplicas"]
        assert _cpus(group) <= float(res["requests"]["cpu"])
        assert _gpus(group) <= res["limits"]["nvidia.com/gpu"], f"{name}: GPUs it lacks"


def test_each_role_has_pods_of_its_own() -> None:
    """Ray hides unreserved GPUs from an actor, so a teacher reserves one like a learner
    worker, and GPUs no longer tell the two apart: custom resources do. Each group
    advertises exactly its role's `ray_resources` for the actors it hosts, so a learner
    worker cannot take a teacher pod (no learner_slot there), nor a teacher a learner pod."""
    cfg = production()
    g = groups(manifest("RayCluster"))
    wanted = _role_resources(cfg)
    assert wanted["teacher"] and wanted["learner"], "the roles need custom resources"
    assert not set(wanted["teacher"]) & set(wanted["learner"]), "one name for both roles"
    for name, group in g.items():
        per_pod = ACTORS_PER_POD.get(name, 0)
        expected = {k: v * per_pod for k, v in wanted[name].items()}
        assert _custom_resources(group) == expected, name
        # KubeRay refuses a group that sets both rayStartParams' resources and `resources`.
        assert "resources" not in group, f"{name}: use rayStartParams only"
    # GPUs: a teacher reserves teacher.num_gpus, a learner worker on CUDA one.
    assert cfg.teacher.device == "cuda" and cfg.teacher.num_gpus > 0
    assert _gpus(g["teacher"]) >= cfg.teacher.num_gpus * ACTORS_PER_POD["teacher"]
    assert cfg.learner.device == "cuda"
    assert _gpus(g["learner"]) >= 1 * ACTORS_PER_POD["learner"]
    assert _gpus(g["head"]) == 0
    # CPUs: room for the actors of each pod, and for the gate beside a learner worker.
    assert _cpus(g["teacher"]) >= cfg.teacher.num_cpus * ACTORS_PER_POD["teacher"]
    learner_pod = cfg.learner.num_cpus * ACTORS_PER_POD["learner"] + cfg.gate.num_cpus
    assert _cpus(g["learner"]) >= learner_pod


def test_custom_resources_are_quoted_as_kuberay_documents() -> None:
    # Ray's KubeRay autoscaler reads the same string its own way (Ray is pinned, so this
    # private helper is stable here); both readings must agree.
    from ray.autoscaler._private.kuberay.autoscaling_config import _get_custom_resources

    for name, group in groups(manifest("RayCluster")).items():
        params = group["rayStartParams"]
        if "resources" in params:
            assert _get_custom_resources({}, params, name) == _custom_resources(group), name
    assert _parse_ray_resources('"{\\"teacher_slot\\": 1}"') == {"teacher_slot": 1}
    for wrong in ('{"teacher_slot": 1}', "{teacher_slot: 1}"):  # split at the space
        with pytest.raises(AssertionError, match="shell words"):
            _parse_ray_resources(wrong)


def test_the_serving_cluster_fits_the_config() -> None:
    cfg = production()
    g = groups(manifest("RayService"))
    assert _cpus(g["head"]) == 0
    workers = [group for name, group in g.items() if name != "head"]
    slots = sum(group["replicas"] * int(_cpus(group) // cfg.serve.num_cpus) for group in workers)
    assert slots >= cfg.serve.num_replicas
    assert cfg.serve.device == "cpu"
    for group in workers:
        assert "nvidia.com/gpu" not in _container_resources(group)["limits"]


def test_images_and_ray_version_agree() -> None:
    import ray

    tag = installed_version("online-distill")
    for kind in CRD_FILES:
        doc = manifest(kind)
        assert cluster_spec(doc)["rayVersion"] == ray.__version__, kind
        for group, _, container in containers(doc):
            assert container["image"] == f"ghcr.io/your-org/online-distill:{tag}", (kind, group)


def test_pods_are_annotated_for_prometheus() -> None:
    cfg = production()
    for kind in CRD_FILES:
        for name, group in groups(manifest(kind)).items():
            annotations = group["template"]["metadata"]["annotations"]
            assert annotations["prometheus.io/scrape"] == "true"
            port = int(annotations["prometheus.io/port"])
            hub = kind in LOOP_KINDS and name == "head"  # the metrics hub stays on the head
            expected = cfg.metrics.port if hub else int(
                group["rayStartParams"]["metrics-export-port"])
            assert port == expected, (kind, name)
            (container,) = group["template"]["spec"]["containers"]
            assert port in {p["containerPort"] for p in container["ports"]}, (kind, name)


# ---------------------------------------------------------------------------------------------
# The Serve application of the RayService


def _serve_config() -> dict[str, Any]:
    return yaml.safe_load(manifest("RayService")["spec"]["serveConfigV2"])


def _unknown_keys(data: dict[str, Any], model: Any) -> set[str]:
    return set(data) - set(model.model_fields)


def test_the_serve_config_is_valid_and_imports_the_app_builder() -> None:
    from ray.serve.schema import HTTPOptionsSchema, ServeApplicationSchema, ServeDeploySchema

    cfg, raw = production(), _serve_config()
    parsed = ServeDeploySchema.model_validate(raw)
    # Serve ignores keys it does not know; a misspelt one must not pass silently here.
    assert not _unknown_keys(raw, ServeDeploySchema)
    assert not _unknown_keys(raw["http_options"], HTTPOptionsSchema)
    (app,) = raw["applications"]
    assert not _unknown_keys(app, ServeApplicationSchema)
    assert parsed.http_options.port == cfg.serve.port
    assert app["route_prefix"] == "/" and app["import_path"] == IMPORT_PATH
    assert app["args"]["config_file"] == CONFIG_FILE
    module, _, name = IMPORT_PATH.partition(":")
    assert callable(getattr(importlib.import_module(module), name))


def test_the_app_builder_builds_the_student_app() -> None:
    from online_distill.actors.serve import app_builder
    from ray import serve

    # What Serve's build task does with an import path and args (Ray is pinned, so this
    # private helper is stable here): it checks the builder's signature, then calls it.
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary

    args = dict(_serve_config()["applications"][0]["args"])
    args["config_file"] = str(PRODUCTION)  # the ConfigMap's content, as the pods see it
    built = call_user_app_builder_with_args_if_necessary(app_builder, args)
    assert isinstance(built, serve.Application)  # binding starts no Ray
    assert isinstance(app_builder({"config_file": str(PRODUCTION),
                                   "overrides": "serve.num_replicas=2 metrics.enabled=false"}),
                      serve.Application)
    with pytest.raises(ConfigError, match="config_file"):
        app_builder({})
    with pytest.raises(ConfigError, match="serve.num_replicas"):
        app_builder({"config_file": str(PRODUCTION), "overrides": ["serve.num_replicas=0"]})


def test_the_readme_explains_every_file_and_how_things_scale() -> None:
    readme = (K8S / "README.md").read_text(encoding="utf-8")
    for name in sorted(EXPECTED_FILES) + ["deploy/production.yaml"]:
        assert name in readme, name
    for field in ("teacher.num_actors", "learner.workers", "serve.num_replicas",
                  "gate.weights_dir", "learner.checkpoint_dir", "ReadWriteMany"):
        assert field in readme, field
